//! Image preparation: decode (JPEG or PNG, any colour type) to RGB, make square, resize, and
//! convert to the network's [-1, 1] NCHW floats.
//!
//! Prepared images are kept as planar (CHW) bytes: a quarter of the memory of f32, and the
//! conversion to floats per batch is cheap.

use anyhow::{Context, Result};
use image::imageops::FilterType;
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

/// Bicubic (Catmull-Rom) resampling; `image` widens the kernel when shrinking, so it also
/// antialiases a 224 -> 32 reduction.
pub const RESIZE_FILTER: FilterType = FilterType::CatmullRom;

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
    let s = size as u32;
    let resized = if sq.width() == s { sq } else { image::imageops::resize(&sq, s, s, RESIZE_FILTER) };
    to_planar(&resized)
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
