//! The generator's own thread. Backends hold `Rc`/`RefCell` state and are not `Send`, so
//! one thread opens the device, builds the generator and answers jobs from a queue; the
//! HTTP handlers send a job and await its reply, and the server stays responsive (the
//! page, the vocabulary, the run's files) while images are drawn.

use crate::backend::device::{self, Opened};
use crate::backend::Backend;
use crate::sample::{self, Drawer, Loaded, Sheet};
use crate::train::Drawing;
use anyhow::{anyhow, Context, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::Instant;
use tokio::sync::oneshot;

/// Jobs that may wait for the generator; more are answered 503 at once.
pub const QUEUE: usize = 32;

/// What to draw. Both are runs of `gan-engine sample`'s sheets, so the pixels are the
/// ones `sample` writes for the same arguments.
#[derive(Clone, Debug)]
pub enum Job {
    /// Images `first..first + n` of `sample --text TEXT --seed SEED`.
    Sample { text: String, seed: u64, first: usize, n: usize },
    /// Row `index` of `sample --interpolate A B --steps STEPS --seed SEED`.
    Walk { a: String, b: String, seed: u64, index: usize, steps: usize },
}

/// The PNGs of a job, in order, and the time the generator and the encoder took.
pub struct Drawn {
    pub pngs: Vec<Vec<u8>>,
    pub seconds: f64,
}

type Reply = oneshot::Sender<Result<Drawn>>;

/// The handle the HTTP side keeps: sends jobs to the generator thread.
#[derive(Clone)]
pub struct Worker {
    tx: SyncSender<(Job, Reply)>,
}

/// Why a job got no images.
pub enum JobError {
    /// The queue is full: try again shortly.
    Busy,
    /// The generator failed (an engine error, or a panic caught on its thread).
    Failed(anyhow::Error),
}

impl Worker {
    /// Starts the thread: opens `device`, puts `loaded`'s generator on it, and returns once
    /// it is ready, with the backend's name. An error (no GPU, a bad checkpoint) is
    /// returned here, before the server listens.
    pub fn start(loaded: Loaded, device: &str, drawing: Drawing) -> Result<(Worker, String)> {
        let (tx, rx) = mpsc::sync_channel::<(Job, Reply)>(QUEUE);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String>>();
        let device = device.to_string();
        std::thread::Builder::new()
            .name("generator".into())
            .spawn(move || {
                // The run's precision: the same images `gan-engine sample` draws.
                let opened = match device::open(&device, Some(loaded.state.options.precision)) {
                    Ok(o) => o,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                match opened {
                    Opened::Cpu(be) => serve_jobs(&be, loaded, drawing, ready_tx, rx),
                    Opened::Gpu(be) => serve_jobs(&be, loaded, drawing, ready_tx, rx),
                }
            })
            .context("cannot start the generator thread")?;
        let name = ready_rx.recv().map_err(|_| anyhow!("the generator thread stopped while loading the model"))??;
        Ok((Worker { tx }, name))
    }

    /// Queues `job` and waits for its images. Dropping the returned future (a client that
    /// went away) lets the generator skip the job.
    pub async fn run(&self, job: Job) -> Result<Drawn, JobError> {
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send((job, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(JobError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(JobError::Failed(anyhow!("the generator thread has stopped"))),
        }
        match answer.await {
            Ok(r) => r.map_err(JobError::Failed),
            Err(_) => Err(JobError::Failed(anyhow!("the generator thread stopped during the request"))),
        }
    }
}

/// The generator thread's loop: build the model, say ready, answer jobs until every
/// `Worker` handle is dropped.
fn serve_jobs<B: Backend>(be: &B, loaded: Loaded, drawing: Drawing, ready: mpsc::Sender<Result<String>>, jobs: mpsc::Receiver<(Job, Reply)>) {
    let mut drawer = match Drawer::new(be, &loaded, drawing) {
        Ok(d) => {
            eprintln!("{}", d.note());
            d
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // The weights are on the backend now; the host copy is not needed any more.
    drop(loaded);
    if ready.send(Ok(be.name())).is_err() {
        return;
    }
    while let Ok((job, reply)) = jobs.recv() {
        if reply.is_closed() {
            continue; // the client gave up while the job waited
        }
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| draw(be, &mut drawer, &job)))
            .unwrap_or_else(|panic| Err(anyhow!("the generator panicked: {}", panic_message(&panic))))
            .map(|pngs| Drawn { pngs, seconds: started.elapsed().as_secs_f64() });
        let _ = reply.send(result);
    }
}

fn draw<B: Backend>(be: &B, drawer: &mut Drawer<B>, job: &Job) -> Result<Vec<Vec<u8>>> {
    let noise_dim = drawer.noise_dim();
    let (mut sheet, k0, k1) = match job {
        Job::Sample { text, seed, first, n } => (Sheet::captions(vec![drawer.tfidf.encode(text)], first + n, *seed, noise_dim), *first, first + n),
        Job::Walk { a, b, seed, index, steps } => {
            (Sheet::walk(drawer.tfidf.encode(a), drawer.tfidf.encode(b), *steps, index + 1, *seed, noise_dim), index * steps, (index + 1) * steps)
        }
    };
    let images = drawer.draw(be, &mut sheet, k0, k1)?;
    images.chunks(drawer.image_len()).map(|img| sample::png(img, drawer.size)).collect()
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "no message".into())
}
