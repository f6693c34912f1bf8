//! Batches for training, prepared one step ahead on a background thread.
//!
//! Everything random is a pure function of the seed and the position, so `(epoch, cursor)` is
//! the whole loader state and a run resumed from a checkpoint sees exactly the batches it
//! would have seen:
//! - the order of epoch `e` is a shuffle seeded by (seed, e);
//! - the flip of the sample at position `p` of epoch `e` is decided by (seed, e, p), and so is
//!   its mismatched text.
//!
//! Every batch has exactly `batch` samples and batches never straddle epochs: the last
//! `len % batch` samples of each epoch's order are dropped (they differ from epoch to epoch).

use super::PreparedData;
use crate::rng::Rng;
use anyhow::{anyhow, ensure, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub epoch: u64,
    /// Position in the epoch's order of the next sample.
    pub cursor: usize,
}

#[derive(Clone, Debug)]
pub struct Batch {
    /// `n * 3 * S * S`, NCHW in [-1, 1].
    pub images: Vec<f32>,
    /// `n * dim`: each sample's own caption vector.
    pub texts: Vec<f32>,
    /// `n * dim`: for each sample, the vector of another row whose vector differs from its
    /// own (when `LoaderOptions::mismatched`).
    pub mismatched_texts: Option<Vec<f32>>,
    pub captions: Vec<String>,
    /// Row of each sample in the prepared data.
    pub indices: Vec<usize>,
    /// Whether each image was mirrored.
    pub flipped: Vec<bool>,
}

#[derive(Clone, Debug)]
pub struct LoaderOptions {
    pub batch: usize,
    pub seed: u64,
    /// Mirror each image left-right with probability 1/2.
    pub flip: bool,
    /// Also produce `mismatched_texts` (for the matching-aware discriminator loss).
    pub mismatched: bool,
}

const TAG_SHUFFLE: u64 = 0x5348_5546; // "SHUF"
const TAG_FLIP: u64 = 0x464c_4950; // "FLIP"
const TAG_MISMATCH: u64 = 0x4d49_534d; // "MISM"

fn mix64(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn key(seed: u64, tag: u64, epoch: u64, pos: u64) -> u64 {
    mix64(mix64(mix64(seed, tag), epoch), pos)
}

/// The sample order of epoch `epoch`: a permutation of `0..n`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(key(seed, TAG_SHUFFLE, epoch, 0)).shuffle(&mut order);
    order
}

/// Whether the sample at position `pos` of epoch `epoch` is mirrored.
pub fn flip_at(seed: u64, epoch: u64, pos: usize) -> bool {
    key(seed, TAG_FLIP, epoch, pos as u64) & 1 == 1
}

/// The row whose text stands in as the mismatched text for row `own` at `pos` of `epoch`:
/// uniform over rows of another text group (groups: rows with identical vectors).
fn mismatch_at(seed: u64, epoch: u64, pos: usize, own: usize, groups: &[u32]) -> usize {
    let n = groups.len();
    let mut rng = Rng::new(key(seed, TAG_MISMATCH, epoch, pos as u64));
    for _ in 0..32 {
        let j = rng.below(n);
        if groups[j] != groups[own] {
            return j;
        }
    }
    // Nearly every row shares one text: walk from a random start to the next other one
    // (`Loader::new` checked that one exists).
    let start = rng.below(n);
    (0..n).map(|k| (start + k) % n).find(|&j| groups[j] != groups[own]).unwrap_or(own)
}

/// Numbers the distinct text vectors, so "a different text" is a cheap comparison.
fn text_groups(data: &PreparedData) -> Vec<u32> {
    let mut ids: HashMap<Vec<u32>, u32> = HashMap::new();
    (0..data.len())
        .map(|i| {
            let bits: Vec<u32> = data.text(i).iter().map(|v| v.to_bits()).collect();
            let next = ids.len() as u32;
            *ids.entry(bits).or_insert(next)
        })
        .collect()
}

struct Producer {
    data: Arc<PreparedData>,
    opts: LoaderOptions,
    groups: Vec<u32>,
    order: Vec<usize>,
    order_epoch: Option<u64>,
}

impl Producer {
    fn make(&mut self, state: &LoaderState) -> Batch {
        if self.order_epoch != Some(state.epoch) {
            self.order = epoch_order(self.data.len(), self.opts.seed, state.epoch);
            self.order_epoch = Some(state.epoch);
        }
        let (b, il, dim) = (self.opts.batch, self.data.image_len(), self.data.tfidf.dim());
        let mut batch = Batch {
            images: vec![0.0; b * il],
            texts: Vec::with_capacity(b * dim),
            mismatched_texts: self.opts.mismatched.then(|| Vec::with_capacity(b * dim)),
            captions: Vec::with_capacity(b),
            indices: Vec::with_capacity(b),
            flipped: Vec::with_capacity(b),
        };
        for (k, img) in batch.images.chunks_exact_mut(il).enumerate() {
            let pos = state.cursor + k;
            let row = self.order[pos];
            let flip = self.opts.flip && flip_at(self.opts.seed, state.epoch, pos);
            self.data.image_flipped(row, flip, img);
            batch.texts.extend_from_slice(self.data.text(row));
            if let Some(m) = &mut batch.mismatched_texts {
                m.extend_from_slice(self.data.text(mismatch_at(self.opts.seed, state.epoch, pos, row, &self.groups)));
            }
            batch.captions.push(self.data.captions[row].clone());
            batch.indices.push(row);
            batch.flipped.push(flip);
        }
        batch
    }
}

pub struct Loader {
    rx: Option<Receiver<(Batch, LoaderState)>>,
    worker: Option<JoinHandle<()>>,
    state: LoaderState,
    batches_per_epoch: usize,
}

/// The state a loader starts from: a cursor with no full batch left moves to the next epoch.
fn normalise(state: LoaderState, n: usize, batch: usize) -> LoaderState {
    if state.cursor + batch > n {
        LoaderState { epoch: state.epoch + 1, cursor: 0 }
    } else {
        state
    }
}

impl Loader {
    /// Starts the background thread that prepares batches from `state` on.
    pub fn new(data: Arc<PreparedData>, opts: LoaderOptions, state: LoaderState) -> Result<Loader> {
        let n = data.len();
        ensure!(opts.batch > 0, "--batch must be at least 1");
        ensure!(opts.batch <= n, "--batch {} is larger than the data set ({n} products): use a batch of at most {n}", opts.batch);
        let groups = if opts.mismatched { text_groups(&data) } else { Vec::new() };
        if opts.mismatched {
            ensure!(
                groups.iter().any(|&g| g != groups[0]),
                "every caption of the data set has the same text vector, so there is no mismatched text for the matching-aware loss"
            );
        }
        let state = normalise(state, n, opts.batch);
        let batches_per_epoch = n / opts.batch;
        // Two batches ready ahead: the trainer never waits unless preparing is slower.
        let (tx, rx) = sync_channel(2);
        let mut producer = Producer { data, opts, groups, order: Vec::new(), order_epoch: None };
        let mut next = state.clone();
        let worker = std::thread::Builder::new().name("batch-loader".into()).spawn(move || loop {
            let batch = producer.make(&next);
            next = normalise(LoaderState { epoch: next.epoch, cursor: next.cursor + producer.opts.batch }, n, producer.opts.batch);
            if tx.send((batch, next.clone())).is_err() {
                return; // the Loader was dropped
            }
        })?;
        Ok(Loader { rx: Some(rx), worker: Some(worker), state, batches_per_epoch })
    }

    pub fn next_batch(&mut self) -> Result<Batch> {
        let rx = self.rx.as_ref().ok_or_else(|| anyhow!("the batch loader is stopped"))?;
        let (batch, after) = rx.recv().map_err(|_| anyhow!("the batch loader thread stopped unexpectedly"))?;
        self.state = after;
        Ok(batch)
    }

    /// The state after the last batch returned (or the start state, normalised).
    pub fn state(&self) -> LoaderState {
        self.state.clone()
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.batches_per_epoch
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel ends the worker at its next send.
        self.rx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
