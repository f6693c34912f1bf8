//! Differentiable augmentation in training (`train --augment`, `--augment-p`): which of
//! DiffAugment's policies (Zhao et al. 2020), with what probability per sample, their
//! parameters drawn on the host for the `augment` op (`backend::augment`), and ADA's
//! controller of that probability (Karras et al. 2020, section 3: `--augment-p auto`).

use crate::backend::augment::*;
use crate::rng::Rng;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

/// Which of DiffAugment's policies run; none by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    pub translation: bool,
    pub cutout: bool,
    pub color: bool,
}

impl Policies {
    /// `--augment translation,cutout,color` (any subset, comma separated, in any order).
    pub fn parse(list: &str) -> Result<Policies> {
        let mut p = Policies::default();
        for name in list.split(',').map(str::trim) {
            match name {
                "translation" => p.translation = true,
                "cutout" => p.cutout = true,
                "color" | "colour" => p.color = true,
                _ => bail!("--augment {list:?}: unknown policy {name:?}; use a comma-separated list of translation, cutout and color"),
            }
        }
        Ok(p)
    }
    /// Whether any policy is on.
    pub fn any(&self) -> bool {
        self.translation || self.cutout || self.color
    }
    /// `translation,cutout,color` (those that are on).
    pub fn names(&self) -> String {
        [("translation", self.translation), ("cutout", self.cutout), ("color", self.color)].iter().filter(|n| n.1).map(|n| n.0).collect::<Vec<_>>().join(",")
    }
}

/// ADA's target for `r_t`, the mean sign of D's logits on the real batch.
pub const ADA_TARGET: f64 = 0.6;
/// Iterations between two adjustments of `p`.
pub const ADA_INTERVAL: u32 = 4;
/// Images over which `p` can go from 0 to 1 (ADA's 500k).
pub const ADA_IMAGES: f64 = 500_000.0;

/// The probability with which each policy is applied to each sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AugmentP {
    /// `--augment-p P`, P in [0, 1].
    Fixed(f64),
    /// `--augment-p auto`: ADA's heuristic, from 0, towards `r_t = target`.
    Auto { target: f64 },
}

impl Default for AugmentP {
    fn default() -> Self {
        AugmentP::Fixed(1.0)
    }
}

impl AugmentP {
    /// `--augment-p P|auto` with `--augment-target T` (only with auto).
    pub fn parse(p: &str, target: Option<f64>) -> Result<AugmentP> {
        let out = if p.trim() == "auto" {
            AugmentP::Auto { target: target.unwrap_or(ADA_TARGET) }
        } else {
            ensure!(target.is_none(), "--augment-target is the target of --augment-p auto; drop it, or use --augment-p auto");
            match p.trim().parse::<f64>() {
                Ok(v) => AugmentP::Fixed(v),
                Err(_) => bail!("--augment-p {p:?} is neither a probability between 0 and 1 nor `auto`"),
            }
        };
        out.check()?;
        Ok(out)
    }
    pub fn check(&self) -> Result<()> {
        match *self {
            AugmentP::Fixed(p) => ensure!((0.0..=1.0).contains(&p), "--augment-p {p} must be a probability between 0 and 1 (or `auto`)"),
            AugmentP::Auto { target } => {
                ensure!((0.0..=1.0).contains(&target), "--augment-target {target} must be between 0 and 1 (ADA uses 0.6)")
            }
        }
        Ok(())
    }
}

/// `train --augment`, `--augment-p` and `--augment-fill`, saved with the run
/// (`TrainOptions::augment`); the default, also for checkpoints from before them, is none
/// (and DiffAugment's mid-grey fill).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AugmentOptions {
    pub policies: Policies,
    pub p: AugmentP,
    /// What translation shifts in and cutout covers, in image units ([-1, 1]; 0 is
    /// mid-grey, 1 white).
    #[serde(default)]
    pub fill: f32,
}

/// `--augment-fill grey|white|black|LEVEL` (LEVEL a pixel value from 0 to 255) in image
/// units: grey 0 (DiffAugment's), white 1, black -1, LEVEL `LEVEL / 127.5 - 1`.
pub fn parse_fill(text: &str) -> Result<f32> {
    let t = text.trim();
    let fill = match t {
        "grey" | "gray" => 0.0,
        "white" => 1.0,
        "black" => -1.0,
        _ => match t.parse::<u8>() {
            Ok(level) => level as f32 / 127.5 - 1.0,
            Err(_) => bail!("--augment-fill {text:?}: use grey, white, black, or a pixel value from 0 to 255"),
        },
    };
    Ok(fill)
}

/// The fill for the log: `grey`, `white`, `black`, or the pixel value.
pub fn describe_fill(fill: f32) -> String {
    match fill {
        0.0 => "grey".into(),
        1.0 => "white".into(),
        -1.0 => "black".into(),
        f => format!("{:.0}", (f + 1.0) * 127.5),
    }
}

impl AugmentOptions {
    pub fn is_on(&self) -> bool {
        self.policies.any()
    }
    pub fn check(&self) -> Result<()> {
        self.p.check()?;
        ensure!(
            (-1.0..=1.0).contains(&self.fill),
            "the fill {} is outside the images' range [-1, 1] (--augment-fill takes grey, white, black or a pixel value from 0 to 255)",
            self.fill
        );
        Ok(())
    }
    /// The probability a run starts with: P, or 0 for auto.
    pub fn initial_p(&self) -> f64 {
        match self.p {
            AugmentP::Fixed(p) => p,
            AugmentP::Auto { .. } => 0.0,
        }
    }
    /// `translation,cutout,color at p 0.5` / `... with p auto (target 0.6)`, and the fill
    /// where it is not DiffAugment's grey, for the log.
    pub fn describe(&self) -> String {
        let p = match self.p {
            AugmentP::Fixed(p) => format!("{} at p {p}", self.policies.names()),
            AugmentP::Auto { target } => format!("{} with adaptive p (target r_t {target})", self.policies.names()),
        };
        if self.fill == 0.0 {
            p
        } else {
            format!("{p}, filled with {}", describe_fill(self.fill))
        }
    }
}

/// ADA's controller: the current `p`, and `r_t`'s running sum since the last adjustment.
/// Saved in the checkpoint (`RunState::ada`) so that a resumed run continues it exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaState {
    pub p: f64,
    /// Sum of the per-iteration mean signs of D's real logits since the last adjustment.
    pub sign_sum: f64,
    /// Iterations summed (below `ADA_INTERVAL`).
    pub iterations: u32,
}

impl Default for AdaState {
    fn default() -> Self {
        AdaState { p: 0.0, sign_sum: 0.0, iterations: 0 }
    }
}

impl AdaState {
    /// Adds one iteration's mean sign of D's logits on the real batch; every `ADA_INTERVAL`
    /// iterations moves `p` by `sign(r_t - target) * batch * ADA_INTERVAL / ADA_IMAGES`,
    /// clamped to [0, 1], with `r_t` the mean over the interval.
    pub fn update(&mut self, real_sign: f64, target: f64, batch: usize) {
        self.sign_sum += real_sign;
        self.iterations += 1;
        if self.iterations >= ADA_INTERVAL {
            let r_t = self.sign_sum / self.iterations as f64;
            let step = batch as f64 * self.iterations as f64 / ADA_IMAGES;
            let dir = if r_t > target {
                1.0
            } else if r_t < target {
                -1.0
            } else {
                0.0
            };
            self.p = (self.p + dir * step).clamp(0.0, 1.0);
            self.sign_sum = 0.0;
            self.iterations = 0;
        }
    }
    /// A saved state that can be continued: `p` in [0, 1], fewer than `ADA_INTERVAL`
    /// iterations summed, each contributing a mean sign in [-1, 1].
    pub fn check(&self) -> Result<()> {
        ensure!((0.0..=1.0).contains(&self.p), "`p` is {}, not a probability", self.p);
        ensure!(self.iterations < ADA_INTERVAL, "`iterations` is {}, at least the interval {ADA_INTERVAL}", self.iterations);
        ensure!(
            self.sign_sum.is_finite() && self.sign_sum.abs() <= self.iterations as f64,
            "`sign_sum` is {}, outside what {} iterations can sum",
            self.sign_sum,
            self.iterations
        );
        Ok(())
    }
}

/// One sample's parameters: each policy on, with probability `p`, drawn as DiffAugment
/// draws them; the identity otherwise. A decision is drawn for every policy that is on; its
/// values only when it applies. `fill` is set where a shift or a cutout applies (so that a
/// sample left alone stays the identity, whatever the fill).
pub fn draw_sample(rng: &mut Rng, policies: Policies, p: f64, fill: f32, h: usize, w: usize) -> [f32; AUGMENT_K] {
    let mut a = AUGMENT_IDENTITY;
    if policies.translation && rng.uniform() < p {
        // Up to 1/8 of the side either way (rounded), as DiffAugment's ratio 0.125.
        let (sx, sy) = ((w as f64 * 0.125 + 0.5) as usize, (h as f64 * 0.125 + 0.5) as usize);
        a[AUGMENT_SHIFT_X] = rng.below(2 * sx + 1) as f32 - sx as f32;
        a[AUGMENT_SHIFT_Y] = rng.below(2 * sy + 1) as f32 - sy as f32;
    }
    if policies.cutout && rng.uniform() < p {
        // Half the side (rounded), centred anywhere on the image (clipped at its edges).
        let (cw, ch) = ((w as f64 * 0.5 + 0.5) as usize, (h as f64 * 0.5 + 0.5) as usize);
        let ox = rng.below(w + 1 - cw % 2) as f32;
        let oy = rng.below(h + 1 - ch % 2) as f32;
        a[AUGMENT_CUT_X0] = ox - (cw / 2) as f32;
        a[AUGMENT_CUT_Y0] = oy - (ch / 2) as f32;
        a[AUGMENT_CUT_W] = cw as f32;
        a[AUGMENT_CUT_H] = ch as f32;
    }
    if policies.color && rng.uniform() < p {
        a[AUGMENT_BRIGHTNESS] = (rng.uniform() - 0.5) as f32;
        a[AUGMENT_SATURATION] = (rng.uniform() * 2.0) as f32;
        a[AUGMENT_CONTRAST] = (rng.uniform() + 0.5) as f32;
    }
    if a[AUGMENT_SHIFT_X] != 0.0 || a[AUGMENT_SHIFT_Y] != 0.0 || a[AUGMENT_CUT_W] > 0.0 {
        a[AUGMENT_FILL] = fill;
    }
    a
}

/// `n` samples' parameters, `n * AUGMENT_K` values.
pub fn draw(rng: &mut Rng, policies: Policies, p: f64, fill: f32, n: usize, h: usize, w: usize) -> Vec<f32> {
    (0..n).flat_map(|_| draw_sample(rng, policies, p, fill, h, w)).collect()
}

/// Whether every sample of a parameter buffer is the identity (then the op is skipped).
pub fn all_identity(a: &[f32]) -> bool {
    a.chunks(AUGMENT_K).all(|r| r == AUGMENT_IDENTITY)
}

/// The parameters of one iteration: the real batch and the fake batch of the D step, and
/// the fake batch of the G step, each drawn afresh as DiffAugment does. Drawn from a stream
/// derived from the seed and the iteration, so a resumed run draws the same without saving
/// any generator state.
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentDraws {
    pub real: Vec<f32>,
    pub fake: Vec<f32>,
    pub fake_g: Vec<f32>,
}

impl AugmentDraws {
    /// For iteration `iteration` (0-based: the iterations completed before it).
    pub fn draw(seed: u64, iteration: u64, policies: Policies, p: f64, fill: f32, n: usize, size: usize) -> AugmentDraws {
        let mut rng = Rng::derive(seed, &format!("augment {iteration}"));
        let real = draw(&mut rng, policies, p, fill, n, size, size);
        let fake = draw(&mut rng, policies, p, fill, n, size, size);
        let fake_g = draw(&mut rng, policies, p, fill, n, size, size);
        AugmentDraws { real, fake, fake_g }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_any_subset_and_refuse_unknown_names() {
        assert_eq!(Policies::parse("translation,cutout,color").unwrap(), Policies { translation: true, cutout: true, color: true });
        assert_eq!(Policies::parse("color").unwrap(), Policies { color: true, ..Policies::default() });
        assert_eq!(Policies::parse("cutout, translation").unwrap().names(), "translation,cutout");
        for bad in ["flip", "", "color,", "translation;cutout"] {
            let e = Policies::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--augment") && e.contains("unknown policy"), "{bad}: {e}");
        }
    }

    #[test]
    fn augment_p_is_a_probability_or_auto() {
        assert_eq!(AugmentP::parse("0.25", None).unwrap(), AugmentP::Fixed(0.25));
        assert_eq!(AugmentP::parse("auto", None).unwrap(), AugmentP::Auto { target: ADA_TARGET });
        assert_eq!(AugmentP::parse("auto", Some(0.5)).unwrap(), AugmentP::Auto { target: 0.5 });
        for bad in ["1.5", "-0.1", "NaN", "inf", "often"] {
            let e = AugmentP::parse(bad, None).unwrap_err().to_string();
            assert!(e.contains("--augment-p"), "{bad}: {e}");
        }
        assert!(AugmentP::parse("auto", Some(f64::NAN)).unwrap_err().to_string().contains("--augment-target"));
        assert!(AugmentP::parse("0.5", Some(0.6)).unwrap_err().to_string().contains("--augment-target"));
    }

    #[test]
    fn ada_raises_p_when_d_is_overconfident_lowers_it_otherwise_and_stays_in_0_1() {
        let (batch, target) = (64, ADA_TARGET);
        let step = batch as f64 * ADA_INTERVAL as f64 / ADA_IMAGES;
        let mut a = AdaState::default();
        // Three iterations change nothing; the fourth adjusts.
        for _ in 0..3 {
            a.update(0.9, target, batch);
            assert_eq!(a.p, 0.0);
        }
        a.update(0.9, target, batch);
        assert!((a.p - step).abs() < 1e-15, "{a:?}");
        assert_eq!((a.sign_sum, a.iterations), (0.0, 0));
        // D unsure (r_t below the target): p goes down, and never below 0.
        let mut b = AdaState { p: 2.5 * step, ..AdaState::default() };
        let mut seen = vec![b.p];
        for _ in 0..16 {
            b.update(0.1, target, batch);
            seen.push(b.p);
        }
        assert!(seen.windows(2).all(|w| w[1] <= w[0]), "{seen:?}");
        assert_eq!(b.p, 0.0);
        // Overconfident for long: p climbs to 1 and stays there.
        let mut c = AdaState { p: 1.0 - step / 2.0, ..AdaState::default() };
        for _ in 0..8 {
            c.update(1.0, target, batch);
            assert!((0.0..=1.0).contains(&c.p));
        }
        assert_eq!(c.p, 1.0);
        // The mean over the interval decides, not the last iteration alone: 1, 1, 1, -1 has
        // r_t = 0.5 < 0.6.
        let mut d = AdaState { p: 0.5, ..AdaState::default() };
        for s in [1.0, 1.0, 1.0, -1.0] {
            d.update(s, target, batch);
        }
        assert!((d.p - (0.5 - step)).abs() < 1e-15, "{d:?}");
        // Exactly on the target: no move.
        let mut e = AdaState { p: 0.5, ..AdaState::default() };
        (0..4).for_each(|_| e.update(0.6, target, batch));
        assert_eq!(e.p, 0.5);
    }

    #[test]
    fn draws_follow_the_probability_and_diffaugment_ranges() {
        let all = Policies { translation: true, cutout: true, color: true };
        let mut rng = Rng::new(3);
        // At p = 0 nothing applies, so the fill is not set either.
        assert!(all_identity(&draw(&mut rng, all, 0.0, 1.0, 50, 32, 32)));
        let a = draw(&mut rng, all, 1.0, 1.0, 400, 32, 32);
        for r in a.chunks(AUGMENT_K) {
            assert_eq!(r[AUGMENT_FILL], 1.0, "{r:?}");
            assert!(r[AUGMENT_SHIFT_X].abs() <= 4.0 && r[AUGMENT_SHIFT_Y].abs() <= 4.0, "{r:?}");
            assert_eq!((r[AUGMENT_CUT_W], r[AUGMENT_CUT_H]), (16.0, 16.0));
            // The square's centre (x0 + 8) is on the image.
            assert!((-8.0..=24.0).contains(&r[AUGMENT_CUT_X0]) && (-8.0..=24.0).contains(&r[AUGMENT_CUT_Y0]), "{r:?}");
            assert!((-0.5..0.5).contains(&r[AUGMENT_BRIGHTNESS]) && (0.0..2.0).contains(&r[AUGMENT_SATURATION]));
            assert!((0.5..1.5).contains(&r[AUGMENT_CONTRAST]));
        }
        // Every shift from -4 to 4 occurs.
        for s in -4..=4 {
            assert!(a.chunks(AUGMENT_K).any(|r| r[AUGMENT_SHIFT_X] == s as f32), "shift {s}");
        }
        // At p = 0.5 about half the samples get each policy.
        let half = draw(&mut rng, Policies { color: true, ..Policies::default() }, 0.5, 1.0, 2000, 8, 8);
        let on = half.chunks(AUGMENT_K).filter(|r| !color_is_identity(r)).count();
        assert!((850..1150).contains(&on), "{on} of 2000");
        // Colour alone neither shifts nor cuts: no sample carries the fill.
        assert!(half.chunks(AUGMENT_K).all(|r| r[AUGMENT_FILL] == 0.0));
        // Translation alone at p = 0.5: the fill exactly where a sample is shifted.
        let moved = draw(&mut rng, Policies { translation: true, ..Policies::default() }, 0.5, -0.5, 400, 32, 32);
        for r in moved.chunks(AUGMENT_K) {
            let shifted = r[AUGMENT_SHIFT_X] != 0.0 || r[AUGMENT_SHIFT_Y] != 0.0;
            assert_eq!(r[AUGMENT_FILL], if shifted { -0.5 } else { 0.0 }, "{r:?}");
        }
        assert!(moved.chunks(AUGMENT_K).any(|r| r[AUGMENT_FILL] == -0.5) && moved.chunks(AUGMENT_K).any(|r| r[AUGMENT_FILL] == 0.0));
        // The fill draws nothing: the same stream with another fill differs only in it.
        let grey = AugmentDraws::draw(5, 7, all, 0.5, 0.0, 8, 32);
        let white = AugmentDraws::draw(5, 7, all, 0.5, 1.0, 8, 32);
        let strip = |v: &[f32]| v.chunks(AUGMENT_K).map(|r| r[..AUGMENT_FILL].to_vec()).collect::<Vec<_>>();
        assert_eq!(strip(&grey.real), strip(&white.real));
        assert_eq!(strip(&grey.fake_g), strip(&white.fake_g));
        assert_ne!(grey.real, white.real);
        // The same seed and iteration draw the same; another iteration differs.
        let d = |it| AugmentDraws::draw(5, it, all, 1.0, 0.0, 4, 32);
        assert_eq!(d(7), d(7));
        assert_ne!(d(7), d(8));
    }

    #[test]
    fn the_fill_is_a_name_or_a_pixel_value() {
        assert_eq!(parse_fill("grey").unwrap(), 0.0);
        assert_eq!(parse_fill("gray").unwrap(), 0.0);
        assert_eq!(parse_fill("white").unwrap(), 1.0);
        assert_eq!(parse_fill("black").unwrap(), -1.0);
        assert_eq!(parse_fill("255").unwrap(), 1.0);
        assert_eq!(parse_fill("0").unwrap(), -1.0);
        assert!((parse_fill("240").unwrap() - (240.0 / 127.5 - 1.0)).abs() < 1e-7);
        for bad in ["256", "-1", "ivory", "", "0.5"] {
            let e = parse_fill(bad).unwrap_err().to_string();
            assert!(e.contains("--augment-fill") && e.contains("0 to 255"), "{bad}: {e}");
        }
        for (f, name) in [(0.0, "grey"), (1.0, "white"), (-1.0, "black"), (240.0 / 127.5 - 1.0, "240")] {
            assert_eq!(describe_fill(f), name);
        }
        let o = AugmentOptions { policies: Policies { translation: true, ..Policies::default() }, p: AugmentP::Fixed(0.5), fill: 1.0 };
        assert_eq!(o.describe(), "translation at p 0.5, filled with white");
        assert_eq!(AugmentOptions { fill: 0.0, ..o }.describe(), "translation at p 0.5");
    }
}
