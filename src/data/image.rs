//! Image preparation: decode (JPEG or PNG, any colour type) to RGB, make square, resize, and
//! convert to the network's [-1, 1] NCHW floats.
//!
//! Prepared images are kept as planar (CHW) bytes: a quarter of the memory of f32, and the
//! conversion to floats per batch is cheap.

use anyhow::{Context, Result};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
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

/// Name of the resampling filter and its implementation (part of the cache key: a change to
/// either changes pixels, so it rebuilds caches).
pub const RESIZE_FILTER: &str = "catmull-rom-fast_image_resize-6";

/// Decodes JPEG or PNG bytes (format sniffed from the content) to 8-bit RGB. Transparent
/// pixels are composited over white; grey, 16-bit and palette images are converted.
/// A JPEG that stops before its end-of-image marker (a truncated file) is an error: the
/// decoder would fill the missing part with grey and report nothing.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().context("unrecognised image format")?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_reaches_end(bytes) {
        anyhow::bail!("the JPEG data ends before its end-of-image marker: the file is truncated");
    }
    Ok(to_rgb_on_white(reader.decode()?))
}

/// Whether a JPEG stream reaches its end-of-image marker (FF D9), walking its segments as a
/// decoder does: marker segments by their length (so the EOI of an embedded thumbnail does
/// not count), entropy-coded data up to the next marker that is not a restart or a stuffed
/// byte. Bytes after the EOI are allowed, as decoders allow them.
pub fn jpeg_reaches_end(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    loop {
        // A marker: one or more 0xFF (fill bytes), then its code.
        if b.get(i) != Some(&0xFF) {
            return false;
        }
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&code) = b.get(i) else { return false };
        i += 1;
        match code {
            0xD9 => return true,
            // Standalone markers: restarts and TEM carry no length.
            0xD0..=0xD7 | 0x01 => continue,
            0x00 => return false,
            _ => {
                let Some(len) = b.get(i..i + 2).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize) else { return false };
                if len < 2 {
                    return false;
                }
                i += len;
                if code == 0xDA {
                    // Entropy-coded data after a start of scan: up to a real marker.
                    loop {
                        let Some(j) = b.get(i..).and_then(|rest| rest.iter().position(|&x| x == 0xFF)).map(|p| i + p) else { return false };
                        match b.get(j + 1) {
                            None => return false,
                            Some(0x00) | Some(0xD0..=0xD7) => i = j + 2,
                            Some(0xFF) => i = j + 1,
                            Some(_) => {
                                i = j;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
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

/// Resampling of interleaved RGB to `w_out` x `h_out` planar CHW bytes with the Catmull-Rom
/// cubic (a = -0.5), widened by the ratio when shrinking so every input pixel contributes
/// (antialiasing). `fast_image_resize` does the work: about four times faster at our sizes than
/// the separable resize written here before it (`cargo bench --bench decode`, group `resize`).
pub fn resize_to_planar(img: &RgbImage, w_out: usize, h_out: usize) -> Vec<u8> {
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    let mut dst = Image::new(w_out as u32, h_out as u32, PixelType::U8x3);
    // Neither call can fail: an RgbImage holds exactly width * height RGB pixels, both images
    // are U8x3 and nothing is cropped. An empty source leaves the output black.
    let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3).expect("an RgbImage is a valid U8x3 image");
    Resizer::new().resize(&src, &mut dst, &options).expect("a U8x3 to U8x3 resize without cropping");
    interleaved_to_planar(dst.buffer())
}

/// Interleaved RGB to planar CHW.
pub fn to_planar(img: &RgbImage) -> Vec<u8> {
    interleaved_to_planar(img.as_raw())
}

fn interleaved_to_planar(rgb: &[u8]) -> Vec<u8> {
    let plane = rgb.len() / 3;
    let mut out = vec![0u8; 3 * plane];
    for (i, p) in rgb.chunks_exact(3).enumerate() {
        out[i] = p[0];
        out[plane + i] = p[1];
        out[2 * plane + i] = p[2];
    }
    out
}

/// The most bytes of the square RGB image a picture is padded to before resizing: the image
/// crate's own default limit on what one decode may allocate (512 MiB). A small file can
/// declare a very long, thin picture, whose white square would not fit in memory.
pub const MAX_SQUARE_BYTES: u64 = 512 << 20;

/// Decodes and prepares one image file's bytes: `size` x `size` planar RGB.
pub fn prepare_bytes(bytes: &[u8], size: usize, fit: Fit) -> Result<Vec<u8>> {
    let img = decode_rgb(bytes)?;
    let (w, h) = img.dimensions();
    let side = match fit {
        Fit::Pad => w.max(h),
        Fit::Crop => w.min(h),
    } as u64;
    if 3 * side * side > MAX_SQUARE_BYTES {
        anyhow::bail!("the picture is {w}x{h}: its {side}x{side} square would take over {} MiB", MAX_SQUARE_BYTES >> 20);
    }
    Ok(prepare_rgb(img, size, fit))
}

/// Reads, decodes and prepares one image file.
pub fn load_planar(path: &Path, size: usize, fit: Fit) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    prepare_bytes(&bytes, size, fit).with_context(|| format!("cannot decode {}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_image_resizes_to_black_without_panicking() {
        assert_eq!(resize_to_planar(&RgbImage::new(0, 0), 4, 4), vec![0u8; 3 * 4 * 4]);
        assert_eq!(prepare_rgb(RgbImage::new(0, 5), 4, Fit::Crop), vec![0u8; 3 * 4 * 4]);
    }
}
