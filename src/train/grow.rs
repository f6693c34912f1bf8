//! The schedule of progressive growing (`train --progressive`): which level a run trains
//! at, and how far its new block is faded in, after a given number of real images shown.
//!
//! ProGAN's: the first level (4x4) is trained for `stage_images`; every later level is
//! faded in linearly over `fade_images`, then stabilised for `stage_images`; the last
//! level stays until the run ends. The position is a function of the images shown before
//! an iteration, so a resumed run (which knows its iteration) is at the same place as the
//! uninterrupted one, mid-fade included.

use crate::model::Progress;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

/// When a progressive run clears Adam's state (`train --adam-reset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AdamReset {
    /// Never: one Adam for the whole run (a DCGAN's, and progressive checkpoints from
    /// before the flag).
    #[default]
    Never,
    /// At the start of every phase, a fade and a stabilisation alike, as ProGAN does: the
    /// new level's first updates are then bias-corrected as Adam's first steps are.
    Phase,
}

/// The flag's own spelling (`--adam-reset never|phase`), from clap's names.
impl std::fmt::Display for AdamReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = clap::ValueEnum::to_possible_value(self).expect("no AdamReset value is hidden from clap");
        f.write_str(value.get_name())
    }
}

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

/// Where a run stands before an iteration (`GrowSchedule::position`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Position {
    pub progress: Progress,
    /// Real images shown before the iteration (by every earlier iteration, at its batch).
    pub images: u64,
    /// The batch of the iteration: its level's (`--batch-schedule`, else `--batch`).
    pub batch: usize,
    /// The first iteration of the phase (fade or stabilisation) the iteration is in:
    /// where `--adam-reset phase` restarts Adam.
    pub since: u64,
}

impl GrowSchedule {
    /// Where the run stands before `iteration` when the iterations at level `l` show
    /// `batches[l]` images each. The schedule is in images shown: an iteration takes the
    /// phase (and so the batch) of the images shown before it, and a fade's alpha is the
    /// images shown since the fade's start in the schedule over `fade_images`. With one
    /// batch for every level this is `at(iteration * batch)`, as it was before batch
    /// schedules; a phase whose images a larger batch overshoots is shortened by the
    /// excess (and a phase shorter than the excess is skipped, as with one batch).
    pub fn position(&self, iteration: u64, batches: &[usize]) -> Position {
        let (mut shown, mut done) = (0u64, 0u64);
        for ph in self.phases() {
            let b = batches[ph.level].max(1) as u64;
            // Iterations in this phase: until the images shown reach its end.
            let n = ph.to.map(|to| to.saturating_sub(shown).div_ceil(b));
            if n.is_none_or(|n| iteration < done + n) {
                let images = shown + (iteration - done) * b;
                let alpha = if ph.fade { ((images - ph.from) as f64 / self.fade_images as f64) as f32 } else { 1.0 };
                return Position { progress: Progress { level: ph.level, alpha }, images, batch: b as usize, since: done };
            }
            let n = n.unwrap_or(0);
            done += n;
            shown += n * b;
        }
        unreachable!("the last phase has no end")
    }
}

/// `--batch-schedule SIDE=BATCH,...`: the batch of the levels of a progressive run by their
/// side (`4=128,8=128,16=64`), in any order; a side not listed trains at `--batch`.
pub fn parse_batch_schedule(text: &str) -> Result<Vec<(usize, usize)>> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for entry in text.split(',').map(str::trim) {
        let parsed = entry.split_once('=').and_then(|(s, b)| Some((s.trim().parse::<usize>().ok()?, b.trim().parse::<usize>().ok()?)));
        let Some((side, batch)) = parsed else {
            bail!("--batch-schedule {text}: the entry `{entry}` is not SIDE=BATCH; write the batch of each level by its side, e.g. 4=128,8=128,16=64")
        };
        ensure!(batch > 0, "--batch-schedule {text}: the batch of side {side} is 0; each level trains on at least one image per batch");
        ensure!(!out.iter().any(|e| e.0 == side), "--batch-schedule {text}: side {side} is listed twice; give each side one batch");
        out.push((side, batch));
    }
    out.sort_unstable();
    Ok(out)
}

/// Writes a batch schedule as `--batch-schedule` reads it.
pub fn describe_batch_schedule(schedule: &[(usize, usize)]) -> String {
    schedule.iter().map(|(s, b)| format!("{s}={b}")).collect::<Vec<_>>().join(",")
}

/// The batch of each level of a `levels`-level progressive run: `schedule`'s for the sides
/// it lists, else `batch`. Refuses a side that is not a level's (4, 8, ... up to the size)
/// and a batch of 0, naming `--batch-schedule`.
pub fn level_batches(schedule: &[(usize, usize)], levels: usize, batch: usize) -> Result<Vec<usize>> {
    let sides: Vec<usize> = (0..levels).map(|l| 4usize << l).collect();
    for &(side, b) in schedule {
        ensure!(
            sides.contains(&side),
            "--batch-schedule {}: side {side} is not a level of this run; its levels have sides {}",
            describe_batch_schedule(schedule),
            sides.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
        );
        ensure!(
            b > 0,
            "--batch-schedule {}: the batch of side {side} is 0; each level trains on at least one image per batch",
            describe_batch_schedule(schedule)
        );
    }
    Ok(sides.iter().map(|s| schedule.iter().find(|e| e.0 == *s).map_or(batch, |e| e.1)).collect())
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
    fn adam_reset_prints_as_the_flag_spells_it() {
        use clap::ValueEnum;
        assert_eq!(AdamReset::Never.to_string(), "never");
        assert_eq!(AdamReset::Phase.to_string(), "phase");
        for v in AdamReset::value_variants() {
            assert_eq!(AdamReset::from_str(&v.to_string(), false).as_ref(), Ok(v));
        }
    }

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

    #[test]
    fn one_batch_for_every_level_is_the_position_of_images_shown() {
        let s = GrowSchedule { levels: 3, fade_images: 100, stage_images: 50 };
        for batch in [1usize, 3, 7, 32, 64, 200] {
            for it in 0..400u64 {
                let p = s.position(it, &[batch; 3]);
                assert_eq!((p.progress, p.images, p.batch), (s.at(it * batch as u64), it * batch as u64, batch), "batch {batch} iteration {it}");
                // A phase starts where the previous iteration was in another phase.
                let phase = |q: Position| (q.progress.level, q.progress.alpha < 1.0);
                let first = it == 0 || phase(s.position(it - 1, &[batch; 3])) != phase(p);
                assert_eq!(p.since == it, first, "batch {batch} iteration {it}: since {}", p.since);
                assert!(p.since <= it && phase(s.position(p.since, &[batch; 3])) == phase(p), "batch {batch} iteration {it}");
            }
        }
    }

    #[test]
    fn each_phase_takes_its_images_at_its_level_batch() {
        // Level 0 (4 px): 50 images at 20 (3 iterations, 60 images: 10 over); level 1
        // (8 px) at 10: its fade runs from 60 shown (alpha 0.1) to 150, 9 iterations; its
        // stabilisation to 200, 5 iterations; level 2 at 25 from 200 on.
        let s = GrowSchedule { levels: 3, fade_images: 100, stage_images: 50 };
        let b = [20, 10, 25];
        let p = |it| s.position(it, &b);
        // The last argument: the first iteration of the phase.
        let at = |it, level, alpha, images, batch, since| {
            assert_eq!(p(it), Position { progress: Progress { level, alpha }, images, batch, since }, "iteration {it}")
        };
        at(0, 0, 1.0, 0, 20, 0);
        at(2, 0, 1.0, 40, 20, 0);
        at(3, 1, 0.1, 60, 10, 3);
        at(4, 1, 0.2, 70, 10, 3);
        at(11, 1, 0.9, 140, 10, 3);
        at(12, 1, 1.0, 150, 10, 12);
        at(16, 1, 1.0, 190, 10, 12);
        at(17, 2, 0.0, 200, 25, 17);
        at(20, 2, 0.75, 275, 25, 17);
        at(21, 2, 1.0, 300, 25, 21);
        at(1000, 2, 1.0, 200 + 983 * 25, 25, 21);
        // A batch larger than a whole phase skips it, as one batch would.
        let q = s.position(1, &[200, 10, 25]);
        assert_eq!((q.progress, q.images, q.batch, q.since), (Progress { level: 2, alpha: 0.0 }, 200, 25, 1));
    }

    #[test]
    fn batch_schedules_are_read_and_checked_by_flag() {
        assert_eq!(parse_batch_schedule("16=64, 4=128,8=128").unwrap(), vec![(4, 128), (8, 128), (16, 64)]);
        assert_eq!(level_batches(&[(4, 128), (16, 8)], 4, 32).unwrap(), vec![128, 32, 8, 32]);
        for (bad, needle) in [("4=", "`4=`"), ("4", "`4`"), ("4=x", "`4=x`"), ("4=1,,8=2", "``"), ("4=0", "is 0"), ("4=2,4=3", "twice")] {
            let e = parse_batch_schedule(bad).unwrap_err().to_string();
            assert!(e.starts_with("--batch-schedule") && e.contains(needle), "{bad}: {e}");
        }
        let e = level_batches(&[(64, 8)], 3, 32).unwrap_err().to_string();
        assert!(e.contains("--batch-schedule 64=8") && e.contains("sides 4, 8, 16"), "{e}");
        let e = level_batches(&[(6, 8)], 3, 32).unwrap_err().to_string();
        assert!(e.contains("side 6 is not a level"), "{e}");
    }
}
