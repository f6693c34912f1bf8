//! What a run leaves for people to look at: sample grids, the metrics log, the loss plot.

use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::path::Path;

/// One row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsRow {
    pub iteration: u64,
    pub epoch: u64,
    pub loss_d: f32,
    pub loss_g: f32,
    pub d_real: f32,
    pub d_fake: f32,
    pub seconds: f64,
    /// `[swd, fd, cond]` of `train --eval-every` at this iteration (`eval::TrainEval`); empty
    /// columns at the others.
    pub eval: Option<[f64; 3]>,
    /// The augmentation probability of `train --augment` at this iteration (a last column,
    /// `augment_p`, in the metrics of runs with --augment).
    pub augment_p: Option<f64>,
}

pub const METRICS_HEADER: &str = "iteration,epoch,loss_d,loss_g,d_real,d_fake,seconds";
/// The header of a run with `--eval-every`: three more columns, empty where not measured.
pub const METRICS_HEADER_EVAL: &str = "iteration,epoch,loss_d,loss_g,d_real,d_fake,seconds,swd,fd,cond";

/// The last column of a run with `--augment`.
pub const METRICS_AUGMENT_COLUMN: &str = "augment_p";

fn header(with_eval: bool, with_augment: bool) -> String {
    let base = if with_eval { METRICS_HEADER_EVAL } else { METRICS_HEADER };
    if with_augment {
        format!("{base},{METRICS_AUGMENT_COLUMN}")
    } else {
        base.to_string()
    }
}

impl MetricsRow {
    /// The row's line: seven columns, or ten `with_eval`; one more `with_augment`.
    pub fn to_csv(&self, with_eval: bool, with_augment: bool) -> String {
        let base = format!("{},{},{},{},{},{},{:.3}", self.iteration, self.epoch, self.loss_d, self.loss_g, self.d_real, self.d_fake, self.seconds);
        let line = match (with_eval, self.eval) {
            (false, _) => base,
            (true, Some([swd, fd, cond])) => format!("{base},{swd:.4},{fd:.4},{cond:.4}"),
            (true, None) => format!("{base},,,"),
        };
        match (with_augment, self.augment_p) {
            (false, _) => line,
            (true, Some(p)) => format!("{line},{p}"),
            (true, None) => format!("{line},"),
        }
    }
    fn parse(line: &str) -> Option<MetricsRow> {
        let mut f: Vec<&str> = line.split(',').collect();
        // 8 or 11 columns: the last is augment_p.
        let augment_p = if f.len() == 8 || f.len() == 11 {
            let p = f.pop()?;
            if p.is_empty() {
                None
            } else {
                Some(p.parse().ok()?)
            }
        } else {
            None
        };
        if f.len() != 7 && f.len() != 10 {
            return None;
        }
        let eval = if f.len() == 10 && !f[7].is_empty() { Some([f[7].parse().ok()?, f[8].parse().ok()?, f[9].parse().ok()?]) } else { None };
        Some(MetricsRow {
            eval,
            augment_p,
            iteration: f[0].parse().ok()?,
            epoch: f[1].parse().ok()?,
            loss_d: f[2].parse().ok()?,
            loss_g: f[3].parse().ok()?,
            d_real: f[4].parse().ok()?,
            d_fake: f[5].parse().ok()?,
            seconds: f[6].parse().ok()?,
        })
    }
}

/// Reads `metrics.csv`; unreadable lines are skipped.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().skip(1).filter_map(MetricsRow::parse).collect())
}

/// Rewrites `metrics.csv` with the rows up to `iteration` (a resumed run continues from
/// its checkpoint, so rows written after it by the interrupted run are dropped).
pub fn truncate_metrics(path: &Path, iteration: u64, with_eval: bool, with_augment: bool) -> Result<()> {
    let rows: Vec<MetricsRow> = read_metrics(path)?.into_iter().filter(|r| r.iteration <= iteration).collect();
    let mut text = format!("{}\n", header(with_eval, with_augment));
    for r in &rows {
        text.push_str(&r.to_csv(with_eval, with_augment));
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Appends rows to `metrics.csv`, writing the header first for a new file.
/// `with_eval`: the run measures itself (`--eval-every`), so the file has the eval columns;
/// `with_augment`: the run augments (`--augment`), so it ends with `augment_p`.
pub fn append_metrics(path: &Path, rows: &[MetricsRow], with_eval: bool, with_augment: bool) -> Result<()> {
    let new = !path.exists();
    let mut f = fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut text = String::new();
    if new {
        text.push_str(&header(with_eval, with_augment));
        text.push('\n');
    }
    for r in rows {
        text.push_str(&r.to_csv(with_eval, with_augment));
        text.push('\n');
    }
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a file through a temporary name and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("out")));
    (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })()
    .inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
    .with_context(|| format!("cannot write {}", path.display()))
}

/// `[-1, 1]` NCHW pixels of one image to RGB bytes.
fn to_rgb(img: &[f32], size: usize) -> Vec<u8> {
    let plane = size * size;
    (0..plane).flat_map(|q| (0..3).map(move |c| q + c * plane)).map(|i| (((img[i] + 1.0) * 127.5).round().clamp(0.0, 255.0)) as u8).collect()
}

/// A `rows x cols` grid of images (`rows * cols` images, NCHW in [-1, 1]), with a white
/// gap of 2 px, scaled up by an integer `zoom` so small images stay visible.
pub fn grid_image(images: &[f32], size: usize, rows: usize, cols: usize, zoom: usize) -> image::RgbImage {
    let cell = size * zoom;
    let (w, h) = grid_pixels(size, rows, cols, zoom);
    let mut out = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
    let per = 3 * size * size;
    for (k, img) in images.chunks(per).take(rows * cols).enumerate() {
        let rgb = to_rgb(img, size);
        let (r, c) = (k / cols, k % cols);
        let (x0, y0) = (GRID_GAP + c * (cell + GRID_GAP), GRID_GAP + r * (cell + GRID_GAP));
        for y in 0..cell {
            for x in 0..cell {
                let q = (y / zoom) * size + x / zoom;
                out.put_pixel((x0 + x) as u32, (y0 + y) as u32, image::Rgb([rgb[3 * q], rgb[3 * q + 1], rgb[3 * q + 2]]));
            }
        }
    }
    out
}

/// Width and height in pixels of `grid_image`'s picture: cells `size * zoom` wide, with
/// GRID_GAP pixels of white around each.
pub fn grid_pixels(size: usize, rows: usize, cols: usize, zoom: usize) -> (usize, usize) {
    let cell = size * zoom;
    (cols * cell + (cols + 1) * GRID_GAP, rows * cell + (rows + 1) * GRID_GAP)
}
const GRID_GAP: usize = 2;

/// One image as an RGB picture.
pub fn single_image(img: &[f32], size: usize) -> image::RgbImage {
    image::RgbImage::from_raw(size as u32, size as u32, to_rgb(img, size)).expect("buffer sized for the image")
}

/// Saves a PNG atomically.
pub fn save_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).context("cannot encode PNG")?;
    write_atomic(path, &bytes)
}

/// Plots loss_D and loss_G (and D(x), D(G(z))) against the iteration into a PNG; when the
/// run measured itself (`--eval-every`), a second panel below shows SWD and FD (left axis)
/// and conditioning accuracy (right axis).
pub fn plot_losses(path: &Path, rows: &[MetricsRow]) -> Result<()> {
    use plotters::prelude::*;
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
    if rows.is_empty() {
        return Ok(());
    }
    let evals: Vec<(f64, [f64; 3])> = rows.iter().filter_map(|r| r.eval.map(|e| (r.iteration as f64, e))).collect();
    let (w, h) = (900u32, if evals.is_empty() { 520u32 } else { 900u32 });
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot draw the loss plot: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (top, bottom) = if evals.is_empty() {
            (root.clone(), None)
        } else {
            let (a, b) = root.split_vertically(520);
            (a, Some(b))
        };
        // A moving average keeps the curves readable; raw values stay in metrics.csv.
        let smooth = |f: &dyn Fn(&MetricsRow) -> f32| -> Vec<(f64, f64)> {
            let k = (rows.len() / 100).max(1);
            rows.iter()
                .enumerate()
                .map(|(i, r)| {
                    let lo = i.saturating_sub(k - 1);
                    let avg = rows[lo..=i].iter().map(|r| f(r) as f64).sum::<f64>() / (i - lo + 1) as f64;
                    (r.iteration as f64, avg)
                })
                .collect()
        };
        let ld = smooth(&|r| r.loss_d);
        let lg = smooth(&|r| r.loss_g);
        let x_max = rows.last().map_or(1.0, |r| r.iteration as f64).max(1.0);
        let y_max = ld.iter().chain(&lg).map(|p| p.1).filter(|v| v.is_finite()).fold(1.0f64, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&top)
            .caption("gan-engine: losses (moving average)", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart.configure_mesh().x_desc("iteration").y_desc("loss").label_style(("sans-serif", 14)).draw().map_err(|e| err(&e))?;
        let series = [
            ("loss_D", ld, RGBColor(200, 40, 40)),
            ("loss_G", lg, RGBColor(40, 80, 200)),
            ("D(x)", smooth(&|r| r.d_real), RGBColor(40, 160, 60)),
            ("D(G(z))", smooth(&|r| r.d_fake), RGBColor(230, 150, 20)),
        ];
        for (label, pts, color) in series {
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).label_font(("sans-serif", 14)).draw().map_err(|e| err(&e))?;
        if let Some(area) = bottom {
            let y_max = evals.iter().flat_map(|(_, e)| [e[0], e[1]]).filter(|v| v.is_finite()).fold(1.0f64, f64::max) * 1.1;
            let mut chart = ChartBuilder::on(&area)
                .caption("held-out figures (--eval-every): lower SWD and FD, higher conditioning are better", ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(52)
                .right_y_label_area_size(52)
                .build_cartesian_2d(0.0..x_max, 0.0..y_max)
                .map_err(|e| err(&e))?
                .set_secondary_coord(0.0..x_max, 0.0..1.0);
            chart.configure_mesh().x_desc("iteration").y_desc("SWD x1e3, FD").label_style(("sans-serif", 14)).draw().map_err(|e| err(&e))?;
            chart.configure_secondary_axes().y_desc("conditioning accuracy").label_style(("sans-serif", 14)).draw().map_err(|e| err(&e))?;
            for (label, k, color) in [("SWD", 0usize, RGBColor(120, 40, 160)), ("FD", 1, RGBColor(20, 140, 140))] {
                chart
                    .draw_series(LineSeries::new(evals.iter().map(|(x, e)| (*x, e[k])), color.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            }
            let color = RGBColor(200, 120, 0);
            chart
                .draw_secondary_series(LineSeries::new(evals.iter().map(|(x, e)| (*x, e[2])), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label("conditioning (right)")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).label_font(("sans-serif", 14)).draw().map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).context("plot buffer")?;
    save_png(path, &img)
}
