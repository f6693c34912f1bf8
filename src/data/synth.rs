//! The built-in synthetic catalogue: garments drawn procedurally as clear silhouettes on white,
//! in named colours and patterns, with Kaggle-style rows and captions. It is the default data
//! set, so the program runs with nothing downloaded, and because every caption word (gender,
//! colour, pattern, kind) is visible in its image, text conditioning can be measured.
//!
//! Product `i` of seed `s` depends only on (s, i): a catalogue of n products is a prefix of
//! any larger one with the same seed. Shapes are signed distance functions in the unit square,
//! so they can be drawn directly at any size with anti-aliased edges.
//!
//! Captions follow the Kaggle caption rule applied to the product's row, exactly what reading
//! the folder written by `write_synthetic` gives: "Women Red Dresses Women Red Striped Dress"
//! (gender, baseColour, articleType, then the product name "Women Red Striped Dress").

use super::image::to_planar;
use super::kaggle::caption_of;
use crate::rng::Rng;
use anyhow::{ensure, Context, Result};
use image::{Rgb, RgbImage};
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;

/// Products in the default training catalogue.
pub const SYNTHETIC_DEFAULT_N: usize = 2000;
/// Seed of the default training catalogue.
pub const SYNTHETIC_DEFAULT_SEED: u64 = 0;
/// Side of the images `write_synthetic` writes.
pub const SYNTHETIC_FILE_SIZE: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    TShirt,
    Shirt,
    Top,
    Trousers,
    Shorts,
    Dress,
    Skirt,
    Shoes,
    Handbag,
    Cap,
}

pub const KINDS: [Kind; 10] =
    [Kind::TShirt, Kind::Shirt, Kind::Top, Kind::Trousers, Kind::Shorts, Kind::Dress, Kind::Skirt, Kind::Shoes, Kind::Handbag, Kind::Cap];

impl Kind {
    /// (masterCategory, subCategory, articleType, name in the product name)
    pub fn kaggle(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Kind::TShirt => ("Apparel", "Topwear", "Tshirts", "T-Shirt"),
            Kind::Shirt => ("Apparel", "Topwear", "Shirts", "Shirt"),
            Kind::Top => ("Apparel", "Topwear", "Tops", "Top"),
            Kind::Trousers => ("Apparel", "Bottomwear", "Trousers", "Trousers"),
            Kind::Shorts => ("Apparel", "Bottomwear", "Shorts", "Shorts"),
            Kind::Dress => ("Apparel", "Dress", "Dresses", "Dress"),
            Kind::Skirt => ("Apparel", "Bottomwear", "Skirts", "Skirt"),
            Kind::Shoes => ("Footwear", "Shoes", "Casual Shoes", "Shoes"),
            Kind::Handbag => ("Accessories", "Bags", "Handbags", "Handbag"),
            Kind::Cap => ("Accessories", "Headwear", "Caps", "Cap"),
        }
    }

    fn women_only(self) -> bool {
        matches!(self, Kind::Top | Kind::Dress | Kind::Skirt | Kind::Handbag)
    }
}

/// Named colours (Kaggle `baseColour` values) and their RGB.
pub const COLOURS: [(&str, [u8; 3]); 12] = [
    ("Black", [28, 28, 30]),
    ("White", [246, 246, 244]),
    ("Grey", [128, 128, 132]),
    ("Red", [204, 32, 38]),
    ("Blue", [40, 96, 214]),
    ("Navy Blue", [24, 34, 92]),
    ("Green", [36, 150, 64]),
    ("Yellow", [242, 206, 36]),
    ("Pink", [242, 132, 174]),
    ("Purple", [122, 48, 164]),
    ("Orange", [246, 132, 28]),
    ("Brown", [118, 74, 38]),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Solid,
    Striped,
    Checked,
    PolkaDot,
}

pub const PATTERNS: [Pattern; 4] = [Pattern::Solid, Pattern::Striped, Pattern::Checked, Pattern::PolkaDot];

impl Pattern {
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Solid => "Solid",
            Pattern::Striped => "Striped",
            Pattern::Checked => "Checked",
            Pattern::PolkaDot => "Polka Dot",
        }
    }
}

/// The synthetic catalogue's label heads (`SynthProduct::labels`).
pub const LABEL_HEADS: [&str; 3] = ["kind", "colour", "pattern"];

/// One synthetic product: what its caption says plus small drawing variations.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthProduct {
    pub id: u64,
    pub gender: &'static str,
    pub kind: Kind,
    pub colour: usize,
    pub pattern: Pattern,
    scale: (f32, f32),
    offset: (f32, f32),
    shade: f32,
    mirror: bool,
}

fn mix64(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SynthProduct {
    /// Product `i` of the catalogue with `seed`.
    pub fn new(seed: u64, i: usize) -> SynthProduct {
        let mut rng = Rng::new(mix64(mix64(seed, 0x5e17), i as u64));
        let kind = KINDS[rng.below(KINDS.len())];
        let gender = if kind.women_only() || rng.below(2) == 0 { "Women" } else { "Men" };
        let colour = rng.below(COLOURS.len());
        let pattern = PATTERNS[rng.below(PATTERNS.len())];
        let mut u = |lo: f64, hi: f64| (lo + (hi - lo) * rng.uniform()) as f32;
        let scale = (u(0.9, 1.02), u(0.92, 1.0));
        let offset = (u(-0.025, 0.025), u(-0.02, 0.02));
        let shade = u(0.92, 1.06);
        let mirror = matches!(kind, Kind::Shoes | Kind::Cap) && rng.below(2) == 1;
        SynthProduct { id: 100_000 + i as u64, gender, kind, colour, pattern, scale, offset, shade, mirror }
    }

    pub fn colour_name(&self) -> &'static str {
        COLOURS[self.colour].0
    }

    /// Its labels, one per `LABEL_HEADS`: kind, colour, pattern.
    pub fn labels(&self) -> Vec<String> {
        vec![self.kind.kaggle().3.to_string(), self.colour_name().to_string(), self.pattern.name().to_string()]
    }

    /// "Women Red Striped Dress"
    pub fn display_name(&self) -> String {
        format!("{} {} {} {}", self.gender, self.colour_name(), self.pattern.name(), self.kind.kaggle().3)
    }

    /// The `styles.csv` row: id, gender, masterCategory, subCategory, articleType, baseColour,
    /// season, year, usage, productDisplayName. Season, year and usage are left empty: they
    /// would be caption words with no visible meaning.
    pub fn row(&self) -> [String; 10] {
        let (master, sub, article, _) = self.kind.kaggle();
        [
            self.id.to_string(),
            self.gender.into(),
            master.into(),
            sub.into(),
            article.into(),
            self.colour_name().into(),
            String::new(),
            String::new(),
            String::new(),
            self.display_name(),
        ]
    }

    /// The Kaggle caption of `row()`.
    pub fn caption(&self) -> String {
        let r = self.row();
        caption_of([r[1].as_str(), &r[5], &r[4], &r[8], &r[6], &r[9]])
    }

    /// Draws the product at `size` x `size` on white.
    pub fn draw(&self, size: usize) -> RgbImage {
        let shape = shape_of(self.kind);
        // Capped below pure white so a white garment never melts into the background.
        let base = COLOURS[self.colour].1.map(|c| (c as f32 * self.shade).clamp(0.0, 250.0));
        let lum = (0.299 * base[0] + 0.587 * base[1] + 0.114 * base[2]) / 255.0;
        // Pattern colour: a darker shade of light colours, a lighter shade of dark ones.
        let second = if lum > 0.55 { base.map(|c| c * 0.45) } else { base.map(|c| c + (255.0 - c) * 0.6) };
        let outline = [55.0f32, 55.0, 60.0];
        let sole = [225.0f32, 225.0, 222.0];
        let s = size as f32;
        let line_px = (s / 64.0).max(1.0);
        let mut img = RgbImage::new(size as u32, size as u32);
        for (x, y, px) in img.enumerate_pixels_mut() {
            // Pixel centre in frame coordinates, then into the garment's own unit square.
            let fx = (x as f32 + 0.5) / s;
            let fy = (y as f32 + 0.5) / s;
            let mut qx = (fx - 0.5 - self.offset.0) / self.scale.0 + 0.5;
            let qy = (fy - 0.5 - self.offset.1) / self.scale.1 + 0.5;
            if self.mirror {
                qx = 1.0 - qx;
            }
            // Distances in garment units times this is (about) pixels.
            let to_px = s * self.scale.0.min(self.scale.1);
            let d = shape.sdf(qx, qy) * to_px;
            let alpha = (0.5 - d).clamp(0.0, 1.0);
            if alpha <= 0.0 {
                *px = Rgb([255, 255, 255]);
                continue;
            }
            let mut fill = if self.kind == Kind::Shoes && qy > shape.sole_y { sole } else { mix(base, second, pattern_cover(self.pattern, qx, qy, to_px)) };
            let detail = shape.detail_sdf(qx, qy) * to_px;
            fill = mix(fill, outline, (0.5 - (detail - 0.35 * line_px)).clamp(0.0, 1.0));
            // The outline band: the last `line_px` pixels inside the edge.
            let inner = mix(outline, fill, (-d - line_px + 0.5).clamp(0.0, 1.0));
            let c = mix([255.0; 3], inner, alpha);
            *px = Rgb(c.map(|v| v.round().clamp(0.0, 255.0) as u8));
        }
        img
    }
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

/// Share of the pattern colour at a point, anti-aliased over about one pixel.
fn pattern_cover(p: Pattern, x: f32, y: f32, to_px: f32) -> f32 {
    let band = |v: f32, period: f32, half: f32| {
        let from_centre = ((v / period).fract() - 0.5).abs() * period;
        (0.5 - (from_centre - half) * to_px).clamp(0.0, 1.0)
    };
    match p {
        Pattern::Solid => 0.0,
        Pattern::Striped => band(y, 0.125, 0.03),
        Pattern::Checked => 0.5 * (band(x, 0.16, 0.04) + band(y, 0.16, 0.04)),
        Pattern::PolkaDot => {
            let period = 0.14;
            let row = (y / period).floor();
            let xs = x + if row as i64 % 2 == 0 { 0.0 } else { period / 2.0 };
            let dx = ((xs / period).fract() - 0.5) * period;
            let dy = ((y / period).fract() - 0.5) * period;
            (0.5 - ((dx * dx + dy * dy).sqrt() - 0.03) * to_px).clamp(0.0, 1.0)
        }
    }
}

type P = (f32, f32);

enum Prim {
    Polygon(Vec<P>),
    /// Half ellipse above its centre line: centre, radii.
    Dome(P, P),
    Ellipse(P, P),
    /// Upper half of a ring: centre, radius, half thickness.
    Handle(P, f32, f32),
}

enum Detail {
    Segment(P, P),
    Dot(P, f32),
}

struct Shape {
    prims: Vec<Prim>,
    details: Vec<Detail>,
    /// Shoes: below this the sole colour.
    sole_y: f32,
}

/// A symmetric outline from its left half, which runs from a point on the centre line down
/// the left side to another point on the centre line.
fn sym(left: &[P]) -> Vec<P> {
    let mut v = left.to_vec();
    v.extend(left[1..left.len() - 1].iter().rev().map(|&(x, y)| (1.0 - x, y)));
    v
}

/// A segment and its mirror image.
fn sym_seg(a: P, b: P) -> [Detail; 2] {
    [Detail::Segment(a, b), Detail::Segment((1.0 - a.0, a.1), (1.0 - b.0, b.1))]
}

fn shape_of(kind: Kind) -> Shape {
    use Detail::*;
    use Prim::*;
    let (prims, details): (Vec<Prim>, Vec<Detail>) = match kind {
        Kind::TShirt => (
            vec![Polygon(sym(&[(0.5, 0.16), (0.40, 0.08), (0.25, 0.12), (0.05, 0.34), (0.15, 0.45), (0.27, 0.36), (0.27, 0.93), (0.5, 0.93)]))],
            sym_seg((0.255, 0.13), (0.272, 0.37)).into_iter().collect(),
        ),
        Kind::Shirt => {
            let mut d: Vec<Detail> = vec![Segment((0.5, 0.2), (0.5, 0.94))];
            d.extend(sym_seg((0.40, 0.07), (0.46, 0.2)));
            d.extend(sym_seg((0.46, 0.2), (0.5, 0.15)));
            d.extend([0.3, 0.45, 0.6, 0.75].map(|y| Dot((0.53, y), 0.012)));
            (
                vec![Polygon(sym(&[
                    (0.5, 0.14),
                    (0.40, 0.07),
                    (0.25, 0.11),
                    (0.10, 0.45),
                    (0.05, 0.86),
                    (0.15, 0.88),
                    (0.22, 0.52),
                    (0.27, 0.40),
                    (0.27, 0.94),
                    (0.5, 0.94),
                ]))],
                d,
            )
        }
        Kind::Top => (
            vec![Polygon(sym(&[(0.5, 0.27), (0.41, 0.22), (0.39, 0.05), (0.33, 0.05), (0.30, 0.30), (0.24, 0.42), (0.26, 0.94), (0.5, 0.94)]))],
            vec![Segment((0.28, 0.86), (0.72, 0.86))],
        ),
        Kind::Trousers => (
            vec![Polygon(sym(&[(0.5, 0.04), (0.26, 0.04), (0.22, 0.96), (0.44, 0.96), (0.5, 0.33)]))],
            vec![Segment((0.26, 0.11), (0.74, 0.11)), Segment((0.5, 0.11), (0.5, 0.3))],
        ),
        Kind::Shorts => (
            vec![Polygon(sym(&[(0.5, 0.1), (0.18, 0.1), (0.06, 0.86), (0.44, 0.86), (0.5, 0.52)]))],
            vec![Segment((0.18, 0.19), (0.82, 0.19)), Segment((0.5, 0.19), (0.5, 0.45))],
        ),
        Kind::Dress => (
            vec![Polygon(sym(&[(0.5, 0.24), (0.42, 0.2), (0.40, 0.04), (0.35, 0.04), (0.33, 0.25), (0.36, 0.42), (0.1, 0.96), (0.5, 0.96)]))],
            vec![Segment((0.36, 0.42), (0.64, 0.42))],
        ),
        Kind::Skirt => {
            let mut d = vec![Segment((0.315, 0.16), (0.685, 0.16))];
            d.extend(sym_seg((0.41, 0.16), (0.33, 0.92)));
            (vec![Polygon(sym(&[(0.5, 0.07), (0.32, 0.07), (0.08, 0.93), (0.5, 0.93)]))], d)
        }
        Kind::Shoes => (
            vec![Polygon(vec![
                (0.04, 0.64),
                (0.07, 0.30),
                (0.21, 0.25),
                (0.35, 0.30),
                (0.50, 0.44),
                (0.78, 0.50),
                (0.94, 0.59),
                (0.96, 0.74),
                (0.92, 0.80),
                (0.06, 0.80),
                (0.04, 0.74),
            ])],
            vec![
                Segment((0.04, 0.71), (0.96, 0.71)),
                Segment((0.42, 0.40), (0.30, 0.50)),
                Segment((0.48, 0.45), (0.36, 0.55)),
                Segment((0.07, 0.32), (0.22, 0.36)),
            ],
        ),
        Kind::Handbag => (
            vec![Polygon(vec![(0.13, 0.40), (0.87, 0.40), (0.95, 0.93), (0.05, 0.93)]), Handle((0.5, 0.42), 0.25, 0.035)],
            vec![Segment((0.12, 0.52), (0.88, 0.52)), Dot((0.5, 0.56), 0.03)],
        ),
        Kind::Cap => (
            vec![Dome((0.42, 0.74), (0.38, 0.58)), Ellipse((0.78, 0.76), (0.2, 0.07)), Ellipse((0.42, 0.15), (0.035, 0.035))],
            vec![Segment((0.42, 0.19), (0.42, 0.74)), Segment((0.42, 0.19), (0.2, 0.74)), Segment((0.42, 0.19), (0.64, 0.74))],
        ),
    };
    Shape { prims, details, sole_y: 0.71 }
}

fn polygon_sdf(v: &[P], px: f32, py: f32) -> f32 {
    // Exact signed distance to a simple polygon (negative inside).
    let mut d = f32::MAX;
    let mut sign = 1.0f32;
    let n = v.len();
    let mut j = n - 1;
    for i in 0..n {
        let (ex, ey) = (v[j].0 - v[i].0, v[j].1 - v[i].1);
        let (wx, wy) = (px - v[i].0, py - v[i].1);
        let t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0);
        let (bx, by) = (wx - ex * t, wy - ey * t);
        d = d.min(bx * bx + by * by);
        let c1 = py >= v[i].1;
        let c2 = py < v[j].1;
        let c3 = ex * wy > ey * wx;
        if (c1 && c2 && c3) || (!c1 && !c2 && !c3) {
            sign = -sign;
        }
        j = i;
    }
    sign * d.sqrt()
}

fn ellipse_sdf(c: P, r: P, px: f32, py: f32) -> f32 {
    // A close approximation of the distance to an ellipse, exact enough for one-pixel edges.
    let (x, y) = (px - c.0, py - c.1);
    let k0 = ((x / r.0).powi(2) + (y / r.1).powi(2)).sqrt();
    let k1 = ((x / (r.0 * r.0)).powi(2) + (y / (r.1 * r.1)).powi(2)).sqrt();
    if k1 == 0.0 {
        -r.0.min(r.1)
    } else {
        k0 * (k0 - 1.0) / k1
    }
}

fn segment_dist(a: P, b: P, px: f32, py: f32) -> f32 {
    let (ex, ey) = (b.0 - a.0, b.1 - a.1);
    let (wx, wy) = (px - a.0, py - a.1);
    let t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0);
    ((wx - ex * t).powi(2) + (wy - ey * t).powi(2)).sqrt()
}

impl Shape {
    fn sdf(&self, x: f32, y: f32) -> f32 {
        self.prims
            .iter()
            .map(|p| match p {
                Prim::Polygon(v) => polygon_sdf(v, x, y),
                Prim::Ellipse(c, r) => ellipse_sdf(*c, *r, x, y),
                Prim::Dome(c, r) => ellipse_sdf(*c, *r, x, y).max(y - c.1),
                Prim::Handle(c, r, t) => ((((x - c.0).powi(2) + (y - c.1).powi(2)).sqrt() - r).abs() - t).max(y - c.1),
            })
            .fold(f32::MAX, f32::min)
    }

    fn detail_sdf(&self, x: f32, y: f32) -> f32 {
        self.details
            .iter()
            .map(|d| match d {
                Detail::Segment(a, b) => segment_dist(*a, *b, x, y),
                Detail::Dot(c, r) => ((x - c.0).powi(2) + (y - c.1).powi(2)).sqrt() - r,
            })
            .fold(f32::MAX, f32::min)
    }
}

/// The first `n` products of the catalogue with `seed`.
pub fn products(n: usize, seed: u64) -> Vec<SynthProduct> {
    (0..n).map(|i| SynthProduct::new(seed, i)).collect()
}

/// Draws every product at `size` (in parallel), as planar CHW bytes one after another.
pub fn draw_planar(products: &[SynthProduct], size: usize) -> Vec<u8> {
    let images: Vec<Vec<u8>> = products.par_iter().map(|p| to_planar(&p.draw(size))).collect();
    images.concat()
}

/// Writes the catalogue in the Kaggle layout: `styles.csv` and `images/<id>.jpg`
/// (`SYNTHETIC_FILE_SIZE` px). Files are replaced if present.
pub fn write_synthetic(out: &Path, n: usize, seed: u64) -> Result<()> {
    write_synthetic_sized(out, n, seed, SYNTHETIC_FILE_SIZE)
}

pub fn write_synthetic_sized(out: &Path, n: usize, seed: u64, size: usize) -> Result<()> {
    ensure!(n > 0, "-n must be at least 1");
    ensure!((8..=1024).contains(&size), "--size {size} is out of range: use 8 to 1024 pixels");
    let images_dir = out.join("images");
    std::fs::create_dir_all(&images_dir).with_context(|| format!("cannot create {}", images_dir.display()))?;
    let products = products(n, seed);
    products.par_iter().try_for_each(|p| -> Result<()> {
        let path = images_dir.join(format!("{}.jpg", p.id));
        let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = std::io::BufWriter::new(file);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, 92)
            .encode_image(&p.draw(size))
            .with_context(|| format!("cannot write {}", path.display()))?;
        w.flush()?;
        Ok(())
    })?;
    let mut csv = String::from("id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n");
    for p in &products {
        // No value contains a comma or quote, so no quoting is needed.
        csv.push_str(&p.row().join(","));
        csv.push('\n');
    }
    let styles = out.join("styles.csv");
    std::fs::write(&styles, csv).with_context(|| format!("cannot write {}", styles.display()))?;
    Ok(())
}
