//! Image preparation: every colour type to RGB, white padding or centre crop, resize, the
//! [-1, 1] scale and the horizontal flip.

use gan_engine::data::image::{decode_rgb, load_planar, make_square, planar_to_unit, prepare_rgb, Fit};
use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use std::io::Cursor;
use std::path::PathBuf;

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format).unwrap();
    buf.into_inner()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn every_colour_type_decodes_to_rgb() {
    // Grey PNG and JPEG.
    let grey = DynamicImage::ImageLuma8(GrayImage::from_pixel(5, 3, Luma([90])));
    let rgb = decode_rgb(&encode(&grey, ImageFormat::Png)).unwrap();
    assert_eq!(rgb.dimensions(), (5, 3));
    assert_eq!(rgb.get_pixel(2, 1), &Rgb([90, 90, 90]));
    let rgb = decode_rgb(&encode(&grey, ImageFormat::Jpeg)).unwrap();
    let p = rgb.get_pixel(2, 1);
    assert!(p[0] == p[1] && p[1] == p[2] && (p[0] as i32 - 90).abs() <= 3, "{p:?}");
    // 16-bit RGB PNG.
    let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(2, 2, Rgb([65535u16, 0, 32896])));
    assert_eq!(decode_rgb(&encode(&deep, ImageFormat::Png)).unwrap().get_pixel(0, 0), &Rgb([255, 0, 128]));
    // Alpha is composited over white: transparent -> white, half red -> pink.
    let mut rgba = RgbaImage::from_pixel(2, 1, Rgba([0, 0, 0, 0]));
    rgba.put_pixel(1, 0, Rgba([255, 0, 0, 128]));
    let rgb = decode_rgb(&encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png)).unwrap();
    assert_eq!(rgb.get_pixel(0, 0), &Rgb([255, 255, 255]));
    assert_eq!(rgb.get_pixel(1, 0), &Rgb([255, 127, 127]));
    // Grey with alpha.
    let la = DynamicImage::ImageLumaA8(image::ImageBuffer::from_pixel(1, 1, image::LumaA([0u8, 255])));
    assert_eq!(decode_rgb(&encode(&la, ImageFormat::Png)).unwrap().get_pixel(0, 0), &Rgb([0, 0, 0]));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(decode_rgb(b"").is_err());
    assert!(decode_rgb(b"\xff\xd8\xff\xe0 truncated").is_err());
    let e = load_planar(&fixture("quirks/images/1006.jpg"), 16, Fit::Pad).unwrap_err();
    assert!(format!("{e:#}").contains("1006.jpg"), "{e:#}");
}

#[test]
fn fixture_files_of_every_kind_load() {
    for name in ["1001.jpg", "1002.png", "1003.jpg", "1004.jpg"] {
        let px = load_planar(&fixture("quirks/images").join(name), 16, Fit::Pad).unwrap();
        assert_eq!(px.len(), 3 * 16 * 16, "{name}");
    }
    // The PNG with alpha: a red disc on transparent, so its corners come out white.
    let px = load_planar(&fixture("quirks/images/1002.png"), 16, Fit::Pad).unwrap();
    assert_eq!([px[0], px[256], px[512]], [255, 255, 255]);
    let centre = 8 * 16 + 8;
    assert!(px[centre] > 180 && px[256 + centre] < 60, "centre {} {}", px[centre], px[256 + centre]);
}

/// A wide image: left half red, right half blue, 8 x 4.
fn wide() -> RgbImage {
    RgbImage::from_fn(8, 4, |x, _| if x < 4 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) })
}

#[test]
fn pad_with_white_or_crop_the_centre() {
    let padded = make_square(wide(), Fit::Pad);
    assert_eq!(padded.dimensions(), (8, 8));
    assert_eq!(padded.get_pixel(0, 0), &Rgb([255, 255, 255]), "top band is white");
    assert_eq!(padded.get_pixel(0, 7), &Rgb([255, 255, 255]), "bottom band is white");
    assert_eq!(padded.get_pixel(0, 2), &Rgb([255, 0, 0]));
    assert_eq!(padded.get_pixel(7, 5), &Rgb([0, 0, 255]));
    let cropped = make_square(wide(), Fit::Crop);
    assert_eq!(cropped.dimensions(), (4, 4));
    assert_eq!(cropped.get_pixel(0, 0), &Rgb([255, 0, 0]));
    assert_eq!(cropped.get_pixel(3, 3), &Rgb([0, 0, 255]));
    let tall = make_square(RgbImage::from_pixel(2, 6, Rgb([0, 0, 0])), Fit::Pad);
    assert_eq!(tall.dimensions(), (6, 6));
    assert_eq!(tall.get_pixel(0, 3), &Rgb([255, 255, 255]));
    assert_eq!(tall.get_pixel(2, 3), &Rgb([0, 0, 0]));
}

#[test]
fn resize_keeps_flat_colour_and_is_planar() {
    let img = RgbImage::from_pixel(100, 60, Rgb([10, 200, 30]));
    let px = prepare_rgb(img, 32, Fit::Crop);
    assert_eq!(px.len(), 3 * 32 * 32);
    assert!(px[..1024].iter().all(|&v| v == 10));
    assert!(px[1024..2048].iter().all(|&v| v == 200));
    assert!(px[2048..].iter().all(|&v| v == 30));
    // Padding a flat image: white bands top and bottom, colour in the middle rows.
    let px = prepare_rgb(RgbImage::from_pixel(100, 50, Rgb([0, 0, 0])), 32, Fit::Pad);
    assert_eq!(px[0], 255);
    assert_eq!(px[16 * 32 + 5], 0);
    // A larger image: downscaling averages (antialiasing) rather than picking pixels.
    let stripes = RgbImage::from_fn(256, 256, |x, _| if x % 2 == 0 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) });
    let px = prepare_rgb(stripes, 32, Fit::Pad);
    let mid = px[16 * 32 + 16] as i32;
    assert!((mid - 128).abs() < 20, "{mid}");
}

#[test]
fn unit_scale_and_flip() {
    // 2x2, channel planes: R = [0, 255, 51, 102], G, B.
    let planar: Vec<u8> = vec![0, 255, 51, 102, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut out = vec![0.0f32; 12];
    planar_to_unit(&planar, 2, false, &mut out);
    assert_eq!(out[0], -1.0);
    assert_eq!(out[1], 1.0);
    assert!((out[2] - (51.0 * 2.0 / 255.0 - 1.0)).abs() < 1e-6);
    let plain = out.clone();
    planar_to_unit(&planar, 2, true, &mut out);
    // Each row reversed in each channel.
    for c in 0..3 {
        for y in 0..2 {
            for x in 0..2 {
                assert_eq!(out[c * 4 + y * 2 + x], plain[c * 4 + y * 2 + (1 - x)]);
            }
        }
    }
}

#[test]
fn resize_agrees_with_the_image_crates_catmull_rom() {
    // A smooth-ish pattern with edges, shrunk 224 -> 64 and enlarged 20 -> 32.
    for (n_in, n_out) in [(224u32, 64usize), (20, 32), (64, 64 - 1)] {
        let img = RgbImage::from_fn(n_in, n_in, |x, y| Rgb([(x * 255 / n_in) as u8, if (x / 7 + y / 5) % 2 == 0 { 30 } else { 220 }, (y * 255 / n_in) as u8]));
        let ours = gan_engine::data::image::resize_to_planar(&img, n_out, n_out);
        let theirs = gan_engine::data::image::to_planar(&image::imageops::resize(&img, n_out as u32, n_out as u32, image::imageops::FilterType::CatmullRom));
        let diff: Vec<i32> = ours.iter().zip(&theirs).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
        let mean = diff.iter().sum::<i32>() as f64 / diff.len() as f64;
        assert!(mean < 1.0 && *diff.iter().max().unwrap() <= 12, "{n_in}->{n_out}: mean {mean}, max {}", diff.iter().max().unwrap());
    }
}
