//! The layer table of `gan-engine model` and the FLOP count of one training iteration.

use super::{Discriminator, Generator};
use crate::backend::Backend;
use crate::nn::Shape;

pub struct LayerRow {
    pub name: String,
    pub layer: String,
    pub out: Shape,
    pub params: usize,
    /// Forward multiply-adds for one image.
    pub macs: u64,
}

pub fn layer_table<B: Backend>(g: &Generator<B>, d: &Discriminator<B>) -> Vec<LayerRow> {
    g.layers()
        .into_iter()
        .chain(d.layers())
        .map(|(name, l, input)| LayerRow {
            name,
            layer: l.describe(),
            out: l.out_shape(input),
            params: l.params().iter().map(|p| p.len()).sum(),
            macs: l.forward_macs(input),
        })
        .collect()
}

/// FLOP (multiply-add = 2) of one training iteration at `batch`, counting the
/// convolutions and linears in every pass that the loop runs:
/// - D step: G forward once; D forward, input gradient and parameter gradient, for the
///   real and for the fake batch;
/// - G step: D forward and input gradient (frozen: no parameter gradient), G input and
///   parameter gradients.
///
/// Input gradients of layers whose input is data (G's first layer, D's first conv in the
/// D step, D's text projection) are not needed and not counted.
pub fn iteration_flops<B: Backend>(g: &Generator<B>, d: &Discriminator<B>, batch: usize) -> f64 {
    let rows = layer_table(g, d);
    let macs = |name: &str| rows.iter().find(|r| r.name == name).map_or(0, |r| r.macs);
    let g_fwd: u64 = rows.iter().filter(|r| r.name.starts_with("generator")).map(|r| r.macs).sum();
    let d_fwd: u64 = rows.iter().filter(|r| r.name.starts_with("discriminator")).map(|r| r.macs).sum();
    let g_total = 3 * g_fwd - macs("generator.main.0") - macs("generator.block0.0");
    // The caption's first layer: the text projection (tiled) or the embedding V (projection).
    let text = macs("discriminator.text.0") + macs("discriminator.embed.0");
    // The layers that read the image: the DCGAN's first convolution, or a progressive D's
    // fromRGB (two of them while a level fades in).
    let image: u64 = rows
        .iter()
        .filter(|r| r.name == "discriminator.main.0" || (r.name.starts_with("discriminator.fromrgb") && r.name.ends_with(".0")))
        .map(|r| r.macs)
        .sum();
    let d_total = 8 * d_fwd - 2 * image - 3 * text;
    2.0 * (g_total + d_total) as f64 * batch as f64
}
