//! `gan-engine serve`: the design studio, a local web page over a trained checkpoint.
//!
//! - `api.rs`: the routes, the JSON API under `/api/` and the embedded page (`page/`);
//! - `worker.rs`: the generator's own thread, fed jobs over a queue.
//!
//! The model is loaded once; the images are drawn by the same code as `gan-engine sample`
//! (`crate::sample`), so the same text and seed give the same PNG bytes.

mod api;
mod worker;

pub use api::{BODY_LIMIT, MAX_INDEX, MAX_N, MAX_STEPS, MAX_TEXT_CHARS, MIN_STEPS};

use crate::sample;
use anyhow::{Context, Result};
use api::{AppState, ModelInfo};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use worker::Worker;

/// What `serve` needs to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// A run folder (its newest checkpoint) or a checkpoint file.
    pub checkpoint: PathBuf,
    /// The address to listen on; loopback unless asked otherwise.
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// `cpu`, `cuda` or `auto`.
    pub device: String,
    /// Which generator draws (`--no-ema`) and with which batchnorm statistics (`--bn`).
    pub drawing: crate::train::Drawing,
}

/// A server with its model loaded and its socket bound, not yet answering.
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
}

impl Server {
    /// Loads the checkpoint, starts the generator thread and binds the socket. Errors (a
    /// missing checkpoint, a busy port, no GPU) come back here, before anything listens.
    pub async fn bind(opts: &Options) -> Result<Server> {
        let (path, device, drawing) = (opts.checkpoint.clone(), opts.device.clone(), opts.drawing);
        // Reading the checkpoint and putting it on the device blocks: not on the runtime.
        let (worker, model, tfidf, run_dir) = tokio::task::spawn_blocking(move || -> Result<_> {
            let loaded = sample::load(&path)?;
            let s = &loaded.state;
            let model = ModelInfo {
                checkpoint: loaded.path.display().to_string(),
                file: loaded.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                iteration: s.iteration,
                step: s.step,
                size: s.config.size,
                width: s.config.width,
                noise_dim: s.config.noise_dim,
                vocabulary_size: s.tfidf.dim(),
                device: String::new(),
                data: s.options.data.as_ref().map(|d| d.display().to_string()),
                weights: if drawing.ema && s.options.ema().is_some() { "generator_ema" } else { "generator" }.into(),
            };
            let (tfidf, run_dir) = (s.tfidf.clone(), loaded.run_dir.clone());
            let (worker, device_name) = Worker::start(loaded, &device, drawing)?;
            Ok((worker, ModelInfo { device: device_name, ..model }, tfidf, run_dir))
        })
        .await
        .context("the model loader stopped")??;
        let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
            .await
            .with_context(|| format!("cannot listen on {}:{} (--host, --port): is another server using it?", opts.host, opts.port))?;
        let addr = listener.local_addr()?;
        Ok(Server { listener, addr, state: Arc::new(AppState { worker, tfidf, model, run_dir }) })
    }

    /// The address the socket is bound to (the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One line about the loaded model, for the terminal.
    pub fn describe(&self) -> String {
        let m = &self.state.model;
        format!("{} (iteration {}, {} px, width {}, {} words) on {}", m.checkpoint, m.iteration, m.size, m.width, m.vocabulary_size, m.device)
    }

    /// Answers requests until `shutdown` completes, then finishes the requests in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let app = api::router(self.state);
        axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await.context("the HTTP server failed")
    }
}

/// `gan-engine serve`: binds, prints the address, serves until Ctrl-C or SIGTERM.
pub fn run(opts: Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("serve-http").build().context("cannot start the async runtime")?;
    rt.block_on(async {
        let server = Server::bind(&opts).await?;
        let addr = server.addr();
        eprintln!("model: {}", server.describe());
        if !addr.ip().is_loopback() {
            eprintln!("warning: {} is reachable from other machines; the studio has no login", addr.ip());
        }
        // The URL on stdout, alone on its line, for people and scripts.
        println!("listening on http://{addr}/");
        eprintln!("open it in a browser; Ctrl-C stops the server");
        server.run(shutdown_signal()).await
    })
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
