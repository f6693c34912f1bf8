//! The schedule of progressive growing (`train --progressive`): which level a run trains
//! at, and how far its new block is faded in, after a given number of real images shown.
//!
//! ProGAN's: the first level (4x4) is trained for `stage_images`; every later level is
//! faded in linearly over `fade_images`, then stabilised for `stage_images`; the last
//! level stays until the run ends. The position is a function of the images shown before
//! an iteration, so a resumed run (which knows its iteration) is at the same place as the
//! uninterrupted one, mid-fade included.

use crate::model::Progress;
use anyhow::{ensure, Result};

/// ProGAN shows 800,000 real images per phase (fade or stabilisation) to CelebA-HQ's 30,000
/// faces, about 27 epochs; 100,000 images are about 26 epochs of the 3,834 products of the
/// shared data set (`--fade-images`, `--stage-images`).
pub const DEFAULT_PHASE_IMAGES: u64 = 100_000;

/// `--size` of a progressive run: a power of two from 16 (three levels: 4, 8, 16) to 512.
pub fn check_size(size: usize) -> Result<()> {
    ensure!(
        size.is_power_of_two() && (16..=512).contains(&size),
        "--progressive --size {size}: the side doubles from 4x4 level by level, so --size must be a power of two from 16 to 512 (16, 32, 64, 128, 256 or 512)"
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrowSchedule {
    /// Levels of the model (`ModelConfig::levels`).
    pub levels: usize,
    pub fade_images: u64,
    pub stage_images: u64,
}

/// One stretch of the schedule, for the plan a run prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    pub level: usize,
    /// Fading the level in (else stabilising it).
    pub fade: bool,
    /// Images shown before it starts.
    pub from: u64,
    /// Images shown when it ends (`None`: the last level, until the run ends).
    pub to: Option<u64>,
}

impl GrowSchedule {
    /// Refuses phases of no images, naming the flag.
    pub fn check(fade_images: u64, stage_images: u64) -> Result<()> {
        ensure!(
            fade_images > 0,
            "--fade-images 0: each new level is faded in over at least one image; ProGAN's schedule scaled to our data is {DEFAULT_PHASE_IMAGES}"
        );
        ensure!(
            stage_images > 0,
            "--stage-images 0: each level is stabilised over at least one image; ProGAN's schedule scaled to our data is {DEFAULT_PHASE_IMAGES}"
        );
        Ok(())
    }

    /// The phases in order.
    pub fn phases(&self) -> Vec<Phase> {
        let mut out = Vec::new();
        let mut at = 0;
        for level in 0..self.levels {
            if level > 0 {
                out.push(Phase { level, fade: true, from: at, to: Some(at + self.fade_images) });
                at += self.fade_images;
            }
            let last = level + 1 == self.levels;
            out.push(Phase { level, fade: false, from: at, to: (!last).then_some(at + self.stage_images) });
            at += self.stage_images;
        }
        out
    }

    /// Where the run stands after `images` real images shown.
    pub fn at(&self, images: u64) -> Progress {
        for ph in self.phases() {
            if ph.to.is_none_or(|to| images < to) {
                let alpha = if ph.fade { ((images - ph.from) as f64 / self.fade_images as f64) as f32 } else { 1.0 };
                return Progress { level: ph.level, alpha };
            }
        }
        unreachable!("the last phase has no end")
    }

    /// Images shown when the last level starts stabilising: the whole schedule.
    pub fn images_to_last_level(&self) -> u64 {
        self.phases().last().map_or(0, |p| p.from)
    }
}

/// The seconds a run spends in each phase, for the lines it prints when a phase starts and
/// the table it prints at the end (`train --progressive`, not `--quiet`).
#[derive(Default)]
pub struct StageClock {
    /// `(level, fading, first iteration, seconds at its start)` of each phase entered.
    entered: Vec<(usize, bool, u64, f64)>,
    /// The iteration and seconds at the end of the run.
    end: Option<(u64, f64)>,
}

impl StageClock {
    /// Notes the phase of `p` at `iteration` (`seconds` into the run); says so on stderr
    /// when it is a new one (the caller passes no bar under --quiet).
    pub fn enter(&mut self, p: Progress, iteration: u64, seconds: f64, bar: &indicatif::ProgressBar) {
        let fading = p.alpha < 1.0;
        if self.entered.last().is_some_and(|e| (e.0, e.1) == (p.level, fading)) {
            return;
        }
        self.entered.push((p.level, fading, iteration, seconds));
        let what = if fading { "fading in" } else { "stabilising" };
        bar.suspend(|| eprintln!("iteration {iteration}: level {} ({} px), {what}", p.level, p.side()));
    }

    pub fn finish(&mut self, iteration: u64, seconds: f64) {
        self.end = Some((iteration, seconds));
    }

    /// One line per phase: its iterations and seconds per iteration.
    pub fn report(&self) -> Vec<String> {
        let Some(end) = self.end else { return Vec::new() };
        let ends = self.entered.iter().skip(1).map(|e| (e.2, e.3)).chain([end]);
        self.entered
            .iter()
            .zip(ends)
            .filter(|(e, (it, _))| *it > e.2)
            .map(|(e, (it, secs))| {
                let n = it - e.2;
                let what = if e.1 { "fade-in" } else { "stable" };
                format!("level {} ({} px) {what}: iterations {}..{it}, {:.4} s per iteration", e.0, 4usize << e.0, e.2, (secs - e.3) / n as f64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_fade_in_linearly_then_stabilise() {
        let s = GrowSchedule { levels: 3, fade_images: 100, stage_images: 50 };
        let p = |images| s.at(images);
        assert_eq!(p(0), Progress { level: 0, alpha: 1.0 });
        assert_eq!(p(49), Progress { level: 0, alpha: 1.0 });
        assert_eq!(p(50), Progress { level: 1, alpha: 0.0 });
        assert_eq!(p(75), Progress { level: 1, alpha: 0.25 });
        assert_eq!(p(149), Progress { level: 1, alpha: 0.99 });
        assert_eq!(p(150), Progress { level: 1, alpha: 1.0 });
        assert_eq!(p(199), Progress { level: 1, alpha: 1.0 });
        assert_eq!(p(200), Progress { level: 2, alpha: 0.0 });
        assert_eq!(p(300), Progress { level: 2, alpha: 1.0 });
        assert_eq!(p(1_000_000), Progress { level: 2, alpha: 1.0 });
        assert_eq!(s.images_to_last_level(), 300);
        // One level: always the first, stabilising.
        assert_eq!(GrowSchedule { levels: 1, fade_images: 1, stage_images: 1 }.at(5), Progress { level: 0, alpha: 1.0 });
    }

    #[test]
    fn empty_phases_are_refused_by_flag() {
        assert!(GrowSchedule::check(0, 10).unwrap_err().to_string().contains("--fade-images"));
        assert!(GrowSchedule::check(10, 0).unwrap_err().to_string().contains("--stage-images"));
        assert!(GrowSchedule::check(1, 1).is_ok());
    }
}
