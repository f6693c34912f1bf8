//! Image preparation: decode (JPEG or PNG, any colour type) to RGB, make square, resize, and
//! convert to the network's [-1, 1] NCHW floats.
//!
//! Prepared images are kept as planar (CHW) bytes: a quarter of the memory of f32, and the
//! conversion to floats per batch is cheap.

use anyhow::{Context, Result};
use image::{DynamicImage, RgbImage};
use std::path::Path;

/// How a non-square image becomes square.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fit {
    /// Pad the short side with white: product photos sit on white, so nothing is lost.
    #[default]
    Pad,
    /// Keep the centred square of the short side.
    Crop,
}

impl Fit {
    pub fn from_crop(crop: bool) -> Fit {
        if crop {
            Fit::Crop
        } else {
            Fit::Pad
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Fit::Pad => "pad",
            Fit::Crop => "crop",
        }
    }
}

/// Name of the resampling filter (part of the cache key: changing it rebuilds caches).
pub const RESIZE_FILTER: &str = "catmull-rom-v1";

/// Decodes JPEG or PNG bytes (format sniffed from the content) to 8-bit RGB. Transparent
/// pixels are composited over white; grey, 16-bit and palette images are converted.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    let img = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().context("unrecognised image format")?.decode()?;
    Ok(to_rgb_on_white(img))
}

pub fn to_rgb_on_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p[3] as u32;
        for c in 0..3 {
            // Round-to-nearest blend over white (255).
            o[c] = ((p[c] as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

/// Makes `img` square: white padding around it, or its centre crop.
pub fn make_square(img: RgbImage, fit: Fit) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img;
    }
    match fit {
        Fit::Pad => {
            let side = w.max(h);
            let mut out = RgbImage::from_pixel(side, side, image::Rgb([255, 255, 255]));
            image::imageops::replace(&mut out, &img, ((side - w) / 2) as i64, ((side - h) / 2) as i64);
            out
        }
        Fit::Crop => {
            let side = w.min(h);
            image::imageops::crop_imm(&img, (w - side) / 2, (h - side) / 2, side, side).to_image()
        }
    }
}

/// Square RGB image of `size` x `size`, as planar CHW bytes.
pub fn prepare_rgb(img: RgbImage, size: usize, fit: Fit) -> Vec<u8> {
    let sq = make_square(img, fit);
    if sq.width() as usize == size {
        return to_planar(&sq);
    }
    resize_to_planar(&sq, size, size)
}

/// Catmull-Rom cubic (a = -0.5): sharp without much ringing.
fn catmull_rom(x: f32) -> f32 {
    let x = x.abs();
    if x < 1.0 {
        1.5 * x * x * x - 2.5 * x * x + 1.0
    } else if x < 2.0 {
        -0.5 * x * x * x + 2.5 * x * x - 4.0 * x + 2.0
    } else {
        0.0
    }
}

/// For each output index: the first input index and the normalised weights. When shrinking,
/// the kernel is widened by the ratio, so every input pixel contributes (antialiasing).
fn resize_weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f32>)> {
    let ratio = n_in as f32 / n_out as f32;
    let scale = ratio.max(1.0);
    let support = 2.0 * scale;
    (0..n_out)
        .map(|o| {
            let centre = (o as f32 + 0.5) * ratio;
            let lo = ((centre - support).floor().max(0.0)) as usize;
            let hi = ((centre + support).ceil() as usize).min(n_in);
            let mut w: Vec<f32> = (lo..hi).map(|i| catmull_rom((i as f32 + 0.5 - centre) / scale)).collect();
            let sum: f32 = w.iter().sum();
            w.iter_mut().for_each(|v| *v /= sum);
            (lo, w)
        })
        .collect()
}

/// Separable resampling of interleaved RGB to `w_out` x `h_out` planar CHW bytes: one
/// horizontal pass over each input row, then vertical combinations of whole rows, which is
/// several times faster than `image::imageops::resize` at our sizes.
pub fn resize_to_planar(img: &RgbImage, w_out: usize, h_out: usize) -> Vec<u8> {
    let (w_in, h_in) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let hw = resize_weights(w_in, w_out);
    let vw = resize_weights(h_in, h_out);
    // Horizontal pass: h_in rows of w_out interleaved RGB floats.
    let mut tmp = vec![0.0f32; h_in * w_out * 3];
    for (row, out_row) in src.chunks_exact(w_in * 3).zip(tmp.chunks_exact_mut(w_out * 3)) {
        for ((lo, w), out) in hw.iter().zip(out_row.chunks_exact_mut(3)) {
            let (mut r, mut g, mut b) = (0.0, 0.0, 0.0);
            for (p, &wk) in row[lo * 3..(lo + w.len()) * 3].chunks_exact(3).zip(w) {
                r += wk * p[0] as f32;
                g += wk * p[1] as f32;
                b += wk * p[2] as f32;
            }
            out.copy_from_slice(&[r, g, b]);
        }
    }
    // Vertical pass, written straight into the planes.
    let plane = w_out * h_out;
    let mut out = vec![0u8; 3 * plane];
    let mut acc = vec![0.0f32; w_out * 3];
    for (oy, (lo, w)) in vw.iter().enumerate() {
        acc.iter_mut().for_each(|v| *v = 0.0);
        for (k, &wk) in w.iter().enumerate() {
            let row = &tmp[(lo + k) * w_out * 3..(lo + k + 1) * w_out * 3];
            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += wk * v);
        }
        for (ox, px) in acc.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + oy * w_out + ox] = px[c].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Interleaved RGB to planar CHW.
pub fn to_planar(img: &RgbImage) -> Vec<u8> {
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0u8; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        out[i] = p[0];
        out[plane + i] = p[1];
        out[2 * plane + i] = p[2];
    }
    out
}

/// Reads, decodes and prepares one image file.
pub fn load_planar(path: &Path, size: usize, fit: Fit) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let img = decode_rgb(&bytes).with_context(|| format!("cannot decode {}", path.display()))?;
    Ok(prepare_rgb(img, size, fit))
}

/// Planar bytes to floats in [-1, 1] (0 -> -1, 255 -> 1), optionally mirrored left-right.
pub fn planar_to_unit(planar: &[u8], size: usize, flip: bool, out: &mut [f32]) {
    assert_eq!(planar.len(), 3 * size * size);
    assert_eq!(out.len(), planar.len(), "image buffer must hold 3*S*S = {} values", planar.len());
    const SCALE: f32 = 2.0 / 255.0;
    for (src_row, dst_row) in planar.chunks_exact(size).zip(out.chunks_exact_mut(size)) {
        if flip {
            for (d, &s) in dst_row.iter_mut().zip(src_row.iter().rev()) {
                *d = s as f32 * SCALE - 1.0;
            }
        } else {
            for (d, &s) in dst_row.iter_mut().zip(src_row) {
                *d = s as f32 * SCALE - 1.0;
            }
        }
    }
}
