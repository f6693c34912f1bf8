//! That `train --resume` continues the saved state, on any backend (tests/train_e2e.rs runs
//! it on the CPU, tests/cuda_sim.rs in the simulation). A resume that re-ran from the seed
//! would match a straight run too, so beyond "2 + 3 resumed equals 5 straight":
//! - the resumed run performs only the remaining iterations (its BCE ops counted);
//! - each piece of saved state (weights, Adam moments, the loader's position, the noise
//!   generator) perturbed in the checkpoint changes the resumed result, and a changed Adam
//!   step (which must equal the iteration) is refused;
//! - the run crosses an epoch boundary (6 products, batch 2: three batches an epoch) with
//!   the matching-aware loss on (W = 0.5), so the mismatched-caption stream is resumed too,
//!   and the mode-seeking term on (M = 1), whose noise ratio comes from the resumed noise.

use gan_engine::backend::{Backend, Precision};
use gan_engine::data::synth::write_synthetic_sized;
use gan_engine::model::TextInD;
use gan_engine::rng::Rng;
use gan_engine::train::checkpoint::{self, Checkpoint};
use gan_engine::train::run::{train, train_until, RunState, TrainOptions};
use gan_engine::train::Hyper;
use std::path::{Path, PathBuf};

fn tmp(label: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gan-engine-resume-{}-{label}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn options(data: &Path, cache: &Path, iters: u64) -> TrainOptions {
    options_with(data, cache, iters, TextInD::Tile)
}

fn options_with(data: &Path, cache: &Path, iters: u64, text_in_d: TextInD) -> TrainOptions {
    TrainOptions {
        data: Some(data.to_path_buf()),
        size: 32,
        width: 4,
        batch: 2,
        iters,
        hyper: Hyper { matching_aware: 0.5, mode_seeking: 1.0, ..Hyper::default() },
        seed: 11,
        save_every: 2,
        sample_every: 1000,
        keep: 5,
        flip: true,
        crop: false,
        max_features: 64,
        cache_dir: Some(cache.to_path_buf()),
        precision: Precision::F32,
        // Every product trained on: the epoch arithmetic below counts them all.
        eval_split: 0.0,
        eval_every: 0,
        minibatch_std: 0,
        augment: Default::default(),
        ema_half_life: 0.0,
        ema_ramp: 0.05,
        progressive: false,
        fade_images: 100_000,
        stage_images: 100_000,
        batch_schedule: Vec::new(),
        adam_reset: Default::default(),
        text_in_d,
    }
}

/// Every tensor of a checkpoint, sorted by name.
fn tensors(path: &Path) -> Vec<(String, Vec<u32>)> {
    let mut v: Vec<_> = checkpoint::load(path).unwrap().tensors.into_iter().map(|t| (t.name, t.data.iter().map(|x| x.to_bits()).collect())).collect();
    v.sort();
    v
}

/// BCE forward calls per iteration: real, fake and mismatched in the D step, one in the G step.
const BCE_PER_ITERATION: u64 = 4;
const TOTAL: u64 = 5;
const SAVED_AT: u64 = 2;

/// Which pieces of saved state to perturb.
#[allow(dead_code)] // each test file uses one
pub enum Pieces {
    All,
    /// What lives in the backend's memory: weights and Adam moments.
    Device,
}

pub fn check<B: Backend>(be: &B, label: &str, pieces: Pieces) {
    let data = tmp(label, "data");
    write_synthetic_sized(&data, 6, 5, 32).unwrap();
    let cache = tmp(label, "cache");
    let straight = tmp(label, "straight");
    train(be, &options(&data, &cache, TOTAL), &straight, None, false).unwrap();
    let want = tensors(&checkpoint::path_for(&straight, TOTAL));
    let end = RunState::from_checkpoint(&checkpoint::load(&checkpoint::path_for(&straight, TOTAL)).unwrap()).unwrap();
    assert_eq!((end.loader.epoch, end.step), (1, TOTAL), "5 batches of 2 from 6 products end in the second epoch");
    let saved = checkpoint::path_for(&straight, SAVED_AT);
    let base = checkpoint::load(&saved).unwrap();
    let state = RunState::from_checkpoint(&base).unwrap();
    assert_eq!((state.iteration, state.step, state.loader.epoch, state.loader.cursor), (SAVED_AT, SAVED_AT, 0, 4));

    // Resumed from iteration 2: only iterations 3, 4 and 5 run, and they equal the straight run's.
    let resume = |ck: Checkpoint, name: &str| -> Vec<(String, Vec<u32>)> {
        let out = tmp(label, name);
        let before = be.profiler().calls("bce_with_logits_forward");
        let mut asked = Vec::new();
        let s = train_until(be, &options(&data, &cache, TOTAL), &out, Some((saved.clone(), ck)), false, &mut |it| {
            asked.push(it);
            false
        })
        .unwrap();
        assert_eq!(s.iterations, TOTAL);
        assert_eq!(asked, [3, 4], "{name}: the resumed run asks after each iteration but the last");
        let ran = be.profiler().calls("bce_with_logits_forward") - before;
        assert_eq!(ran, BCE_PER_ITERATION * (TOTAL - SAVED_AT), "{name}: the resumed run must perform exactly the remaining iterations");
        let t = tensors(&checkpoint::path_for(&out, TOTAL));
        let _ = std::fs::remove_dir_all(out);
        t
    };
    assert!(resume(checkpoint::load(&saved).unwrap(), "resumed") == want, "{label}: 2 + 3 resumed differs from 5 straight");

    // Each piece of the saved state, perturbed, changes the result: the resumed run uses it.
    let with_state = |f: &dyn Fn(&mut RunState)| {
        let mut ck = checkpoint::load(&saved).unwrap();
        let mut s = RunState::from_checkpoint(&ck).unwrap();
        f(&mut s);
        ck.meta = serde_json::to_value(&s).unwrap();
        ck
    };
    let with_tensor = |name: &str, f: &dyn Fn(&mut Vec<f32>)| {
        let mut ck = checkpoint::load(&saved).unwrap();
        let t = ck.tensors.iter_mut().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"));
        f(&mut t.data);
        ck
    };
    let variants: Vec<(&str, Checkpoint)> = vec![
        ("weights", with_tensor("generator.main.0.weight", &|d| d[0] += 1e-2)),
        ("adam_moments", with_tensor("optimizer.discriminator.main.0.weight.exp_avg_sq", &|d| d.iter_mut().for_each(|v| *v *= 4.0))),
        ("loader_position", with_state(&|s| s.loader.cursor = 2)),
        ("noise_rng", with_state(&|s| s.noise_rng = Rng::derive(99, "noise"))),
    ];
    let host = ["loader_position", "noise_rng"];
    for (name, ck) in variants.into_iter().filter(|(n, _)| matches!(pieces, Pieces::All) || !host.contains(n)) {
        let got = resume(ck, name);
        let changed: Vec<&str> = got.iter().zip(&want).filter(|(a, b)| a != b).map(|(a, _)| a.0.as_str()).collect();
        assert!(!changed.is_empty(), "{label}: perturbing the saved {name} changed nothing: the resumed run does not use it");
        println!("{label}: perturbed {name}: {} of {} tensors differ after the resumed run", changed.len(), want.len());
    }
    // Adam's step (its t) must equal the iteration, and loading checks it (train::run): a
    // changed step is refused, naming the field, rather than resumed from.
    if matches!(pieces, Pieces::All) {
        let out = tmp(label, "adam_step");
        let Err(err) = train_until(be, &options(&data, &cache, TOTAL), &out, Some((saved.clone(), with_state(&|s| s.step += 3))), false, &mut |_| false) else {
            panic!("a checkpoint whose Adam step differs from its iteration must be refused")
        };
        assert!(format!("{err:#}").contains("`step`"), "{err:#}");
        let _ = std::fs::remove_dir_all(out);
    }
    for d in [data, cache, straight] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `--augment translation,cutout,color` resumed, on any backend: with `--augment-p auto`,
/// 2 + 3 resumed iterations equal 5 straight bit for bit, ADA's state included (saved in
/// the middle of its 4-iteration interval), and the saved probability is what the resumed
/// run uses; with a fixed `--augment-p 0.5`, which really augments, the same, and the
/// augmentation changes the run.
#[allow(dead_code)] // each test file uses one
pub fn check_augment<B: Backend>(be: &B, label: &str) {
    use gan_engine::train::augment::{AugmentOptions, AugmentP, Policies};
    use gan_engine::train::report;
    let data = tmp(label, "aug-data");
    write_synthetic_sized(&data, 6, 5, 32).unwrap();
    let cache = tmp(label, "aug-cache");
    let all = Policies { translation: true, cutout: true, color: true };
    let run = |o: &TrainOptions, name: &str, from: Option<Checkpoint>, saved: &Path| -> (PathBuf, Vec<(String, Vec<u32>)>, RunState) {
        let out = tmp(label, name);
        train(be, o, &out, from.map(|ck| (saved.to_path_buf(), ck)), false).unwrap();
        let last = checkpoint::path_for(&out, TOTAL);
        let state = RunState::from_checkpoint(&checkpoint::load(&last).unwrap()).unwrap();
        (out, tensors(&last), state)
    };
    let p_column = |dir: &Path| -> Vec<(u64, Option<f64>)> {
        report::read_metrics(&dir.join("metrics.csv")).unwrap().iter().filter(|r| r.iteration > SAVED_AT).map(|r| (r.iteration, r.augment_p)).collect()
    };
    for (name, p, fill) in [("auto", AugmentP::Auto { target: 0.6 }, 0.0), ("fixed", AugmentP::Fixed(0.5), 0.0), ("white", AugmentP::Fixed(0.5), 1.0)] {
        let o = TrainOptions { augment: AugmentOptions { policies: all, p, fill }, ..options(&data, &cache, TOTAL) };
        let (straight, want, end) = run(&o, &format!("aug-{name}-straight"), None, Path::new(""));
        let saved = checkpoint::path_for(&straight, SAVED_AT);
        let state = RunState::from_checkpoint(&checkpoint::load(&saved).unwrap()).unwrap();
        assert_eq!(state.options.augment, o.augment, "{label} {name}: the options are saved");
        match p {
            AugmentP::Auto { .. } => {
                let ada = state.ada.as_ref().expect("an auto run saves ADA's state");
                assert_eq!((ada.p, ada.iterations), (0.0, 2), "{label}: saved after 2 of the 4 iterations of the first interval");
                assert_eq!(end.ada.as_ref().map(|a| a.iterations), Some(1), "{label}: one iteration into the second interval");
            }
            AugmentP::Fixed(_) => assert!(state.ada.is_none() && end.ada.is_none()),
        }
        let (resumed, got, got_end) = run(&o, &format!("aug-{name}-resumed"), Some(checkpoint::load(&saved).unwrap()), &saved);
        assert!(got == want, "{label} {name}: 2 + 3 resumed differs from 5 straight");
        assert_eq!(got_end.ada, end.ada, "{label} {name}: ADA's state differs after the resumed run");
        let column = p_column(&straight);
        assert_eq!(column.len(), 3);
        assert!(column.iter().all(|(_, p)| p.is_some()), "{label} {name}: metrics.csv has augment_p: {column:?}");
        assert_eq!(p_column(&resumed), column, "{label} {name}: augment_p in metrics.csv");
        let changed = match p {
            // The saved probability is used: raised to 1, the resumed run augments every image.
            AugmentP::Auto { .. } => {
                let mut ck = checkpoint::load(&saved).unwrap();
                let mut s = state.clone();
                s.ada.as_mut().unwrap().p = 1.0;
                ck.meta = serde_json::to_value(&s).unwrap();
                let (dir, t, _) = run(&o, &format!("aug-{name}-raised"), Some(ck), &saved);
                let _ = std::fs::remove_dir_all(dir);
                t
            }
            // The fill is applied: with DiffAugment's grey instead the run differs.
            AugmentP::Fixed(_) if fill != 0.0 => {
                let grey = TrainOptions { augment: AugmentOptions { fill: 0.0, ..o.augment }, ..o.clone() };
                let (dir, t, _) = run(&grey, &format!("aug-{name}-grey"), None, Path::new(""));
                let _ = std::fs::remove_dir_all(dir);
                t
            }
            // The augmentation is applied: without it the run differs.
            AugmentP::Fixed(_) => {
                let (dir, t, _) = run(&options(&data, &cache, TOTAL), &format!("aug-{name}-none"), None, Path::new(""));
                let _ = std::fs::remove_dir_all(dir);
                t
            }
        };
        assert!(changed != want, "{label} {name}: changing the augmentation changed nothing");
        for d in [straight, resumed] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    for d in [data, cache] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `check`'s first proof with the EMA generator on (a half-life of 40 images with a ramp-up
/// of 1, so that the betas of these first steps, about 0.7 to 0.85, keep what the average
/// held; a sample grid every iteration, so its batchnorm statistics are recomputed every
/// iteration): 2 + 3 resumed equals 5 straight bit for bit, `generator_ema.*` included; the
/// EMA weights are stored, differ from G's, and are what the resumed run continues from.
#[allow(dead_code)] // each test file uses what it needs
pub fn check_ema<B: Backend>(be: &B, label: &str) {
    let data = tmp(label, "data");
    write_synthetic_sized(&data, 6, 5, 32).unwrap();
    let cache = tmp(label, "cache");
    let opts = TrainOptions { ema_half_life: 40.0, ema_ramp: 1.0, sample_every: 1, ..options(&data, &cache, TOTAL) };
    let straight = tmp(label, "straight");
    train(be, &opts, &straight, None, false).unwrap();
    let want = tensors(&checkpoint::path_for(&straight, TOTAL));
    let ema: Vec<&(String, Vec<u32>)> = want.iter().filter(|(n, _)| n.starts_with("generator_ema.")).collect();
    let g: Vec<&(String, Vec<u32>)> = want.iter().filter(|(n, _)| n.starts_with("generator.")).collect();
    assert_eq!(ema.len(), g.len(), "every G parameter and statistic has its average: {:?}", ema.iter().map(|t| &t.0).collect::<Vec<_>>());
    for (a, w) in ema.iter().zip(&g) {
        assert_eq!(a.0.replacen("generator_ema.", "generator.", 1), w.0);
        assert_ne!(a.1, w.1, "{} equals G's {} after 5 iterations: the average does not average", a.0, w.0);
    }
    assert!(!want.iter().any(|(n, _)| n.starts_with("optimizer.generator_ema")), "the average has no optimizer state");
    let saved = checkpoint::path_for(&straight, SAVED_AT);
    let resume = |ck: Checkpoint, name: &str| -> Vec<(String, Vec<u32>)> {
        let out = tmp(label, name);
        train_until(be, &opts, &out, Some((saved.clone(), ck)), false, &mut |_| false).unwrap();
        let t = tensors(&checkpoint::path_for(&out, TOTAL));
        let _ = std::fs::remove_dir_all(out);
        t
    };
    let got = resume(checkpoint::load(&saved).unwrap(), "resumed");
    let differ: Vec<&str> = got.iter().zip(&want).filter(|(a, b)| a != b).map(|(a, _)| a.0.as_str()).collect();
    assert!(got.len() == want.len() && differ.is_empty(), "{label}: 2 + 3 resumed differs from 5 straight in {differ:?}");
    // The stored average is what the resumed run continues: perturbed, it changes the
    // result's average and nothing else (G and D never read it).
    let mut ck = checkpoint::load(&saved).unwrap();
    ck.tensors.iter_mut().find(|t| t.name == "generator_ema.main.0.weight").unwrap().data[0] += 1e-2;
    let got = resume(ck, "ema_weights");
    let changed: Vec<&str> = got.iter().zip(&want).filter(|(a, b)| a != b).map(|(a, _)| a.0.as_str()).collect();
    assert!(changed.contains(&"generator_ema.main.0.weight"), "{label}: perturbing the saved EMA weights changed nothing: {changed:?}");
    assert!(changed.iter().all(|n| n.starts_with("generator_ema.")), "{label}: the EMA weights changed the training itself: {changed:?}");
    for d in [data, cache, straight] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `train --text-in-d projection` resumed: 2 + 3 iterations equal 5 straight bit for bit; the
/// mode is saved in the checkpoint's model and options; the embedding V is saved and used
/// by the resumed run (perturbed, it changes the result); and a checkpoint that says
/// projection but lacks V is refused, naming the tensor.
pub fn check_projection<B: Backend>(be: &B, label: &str) {
    let data = tmp(label, "data");
    write_synthetic_sized(&data, 6, 5, 32).unwrap();
    let cache = tmp(label, "cache");
    let straight = tmp(label, "straight");
    let opts = options_with(&data, &cache, TOTAL, TextInD::Projection);
    train(be, &opts, &straight, None, false).unwrap();
    let want = tensors(&checkpoint::path_for(&straight, TOTAL));
    let terms = RunState::from_checkpoint(&checkpoint::load(&checkpoint::path_for(&straight, TOTAL)).unwrap()).unwrap().config.text_dim;
    assert!(
        want.iter().any(|(n, v)| n == "discriminator.embed.0.weight" && v.len() == 16 * terms),
        "V: the TF-IDF vector ({terms} terms) to the 16 top channels"
    );
    assert!(!want.iter().any(|(n, _)| n.starts_with("discriminator.text.")), "no text projection is tiled");
    let saved = checkpoint::path_for(&straight, SAVED_AT);
    let state = RunState::from_checkpoint(&checkpoint::load(&saved).unwrap()).unwrap();
    assert_eq!((state.config.text_in_d, state.options.text_in_d), (TextInD::Projection, TextInD::Projection));
    let resume = |ck: Checkpoint, name: &str| -> anyhow::Result<Vec<(String, Vec<u32>)>> {
        let out = tmp(label, name);
        let r = train_until(be, &opts, &out, Some((saved.clone(), ck)), false, &mut |_| false);
        let t = r.map(|_| tensors(&checkpoint::path_for(&out, TOTAL)));
        let _ = std::fs::remove_dir_all(out);
        t
    };
    assert!(resume(checkpoint::load(&saved).unwrap(), "resumed").unwrap() == want, "{label}: 2 + 3 resumed differs from 5 straight");
    let mut ck = checkpoint::load(&saved).unwrap();
    ck.tensors.iter_mut().find(|t| t.name == "discriminator.embed.0.weight").unwrap().data.iter_mut().for_each(|v| *v *= 1.5);
    assert!(resume(ck, "embed").unwrap() != want, "{label}: perturbing the saved embedding changed nothing");
    let mut ck = checkpoint::load(&saved).unwrap();
    ck.tensors.retain(|t| t.name != "discriminator.embed.0.weight");
    let err = format!("{:#}", resume(ck, "no-embed").expect_err("a projection checkpoint without V must be refused"));
    assert!(err.contains("discriminator.embed.0.weight") && err.contains("config.text_in_d"), "{err}");
    // A tiled checkpoint cannot be resumed as a projection run: the options differ.
    let mut ck = checkpoint::load(&saved).unwrap();
    ck.meta["options"]["text_in_d"] = serde_json::json!("tile");
    let err = format!("{:#}", resume(ck, "tiled-options").expect_err("options and model disagree"));
    assert!(err.contains("options.text_in_d"), "{err}");
    for d in [data, cache, straight] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `train --progressive` resumed mid-fade: a 16 px model (levels 4, 8 and 16 px) at batch 2
/// with phases of 4 images (fade) and 2 (stabilise), so that the run fades level 1 in over
/// iterations 1 and 2, stabilises it at 3, fades level 2 in over 4 and 5 and stabilises it
/// from 6; saved after iteration 5 (level 2 at fade 0.5) and resumed to 7, it equals the
/// straight run bit for bit, with the EMA generator, the minibatch standard deviation and
/// `--adam-reset phase` on (resumed mid-phase, Adam's step count comes from the schedule;
/// resumed just before a phase, the resumed run clears the moments). The checkpoint records where the run stands, and one whose record disagrees with
/// the schedule is refused.
#[allow(dead_code)] // each test file uses what it needs
pub fn check_progressive<B: Backend>(be: &B, label: &str) {
    use gan_engine::model::Progress;
    use gan_engine::train::grow::AdamReset;
    let data = tmp(label, "data");
    write_synthetic_sized(&data, 6, 5, 16).unwrap();
    let cache = tmp(label, "cache");
    let opts = TrainOptions {
        size: 16,
        progressive: true,
        fade_images: 4,
        stage_images: 2,
        minibatch_std: 2,
        ema_half_life: 40.0,
        ema_ramp: 1.0,
        save_every: 1,
        sample_every: 2,
        keep: 10,
        adam_reset: AdamReset::Phase,
        ..options(&data, &cache, 7)
    };
    let straight = tmp(label, "straight");
    train(be, &opts, &straight, None, false).unwrap();
    let want = tensors(&checkpoint::path_for(&straight, 7));
    // `--adam-reset phase` clears Adam's moments when a phase starts (iterations 1, 3, 4
    // and 6): level 1's toRGB, unused once level 2 is stable, has none after iteration 6;
    // with one Adam for the whole run it keeps those of its use in iterations 1 to 5. The
    // two runs are one before the first phase change.
    let moments_of = |t: &[(String, Vec<u32>)], param: &str| -> Vec<bool> {
        ["exp_avg", "exp_avg_sq"]
            .map(|m| t.iter().find(|(n, _)| *n == format!("optimizer.{param}.{m}")).unwrap().1.iter().any(|&b| f32::from_bits(b) != 0.0))
            .to_vec()
    };
    assert_eq!(moments_of(&want, "generator.torgb1.0.weight"), [false, false], "{label}: Adam was not reset when level 2 was stabilised");
    assert_eq!(moments_of(&want, "generator.torgb2.0.weight"), [true, true], "{label}: level 2's toRGB takes Adam steps");
    let never = tmp(label, "never");
    train(be, &TrainOptions { adam_reset: AdamReset::Never, ..opts.clone() }, &never, None, false).unwrap();
    assert_eq!(moments_of(&tensors(&checkpoint::path_for(&never, 7)), "generator.torgb1.0.weight"), [true, true]);
    assert!(tensors(&checkpoint::path_for(&never, 1)) == tensors(&checkpoint::path_for(&straight, 1)), "{label}: the runs differ before any reset");
    assert!(tensors(&checkpoint::path_for(&never, 2)) != tensors(&checkpoint::path_for(&straight, 2)), "{label}: the reset at iteration 1 changed nothing");
    let _ = std::fs::remove_dir_all(never);
    let at = |it: u64| RunState::from_checkpoint(&checkpoint::load(&checkpoint::path_for(&straight, it)).unwrap()).unwrap().progress;
    let p = |level, alpha| Some(Progress { level, alpha });
    assert_eq!([at(1), at(2), at(3), at(4), at(5), at(7)], [p(1, 0.0), p(1, 0.5), p(1, 1.0), p(2, 0.0), p(2, 0.5), p(2, 1.0)]);
    assert!(want.iter().any(|(n, _)| n == "generator.torgb0.0.weight") && want.iter().any(|(n, _)| n == "generator_ema.block2.4.weight"));
    let saved = checkpoint::path_for(&straight, 5);
    let resume = |ck: Checkpoint, name: &str| -> anyhow::Result<Vec<(String, Vec<u32>)>> {
        let out = tmp(label, name);
        let r = train_until(be, &opts, &out, Some((saved.clone(), ck)), false, &mut |_| false);
        let t = r.map(|_| tensors(&checkpoint::path_for(&out, 7)));
        let _ = std::fs::remove_dir_all(out);
        t
    };
    let got = resume(checkpoint::load(&saved).unwrap(), "resumed").unwrap();
    let differ: Vec<&str> = got.iter().zip(&want).filter(|(a, b)| a != b).map(|(a, _)| a.0.as_str()).collect();
    assert!(got.len() == want.len() && differ.is_empty(), "{label}: 5 + 2 resumed mid-fade differs from 7 straight in {differ:?}");
    // Resumed just before a phase starts (iteration 6 stabilises level 2): the moments in
    // the checkpoint are cleared by the resumed run, as by the straight one.
    let at_change = checkpoint::path_for(&straight, 6);
    let out = tmp(label, "at-change");
    train_until(be, &opts, &out, Some((at_change.clone(), checkpoint::load(&at_change).unwrap())), false, &mut |_| false).unwrap();
    assert!(tensors(&checkpoint::path_for(&out, 7)) == want, "{label}: 6 + 1 resumed at a phase change differs from 7 straight");
    let _ = std::fs::remove_dir_all(out);
    // The old level's toRGB is used while level 2 fades in: perturbed, it changes the result.
    let mut ck = checkpoint::load(&saved).unwrap();
    ck.tensors.iter_mut().find(|t| t.name == "generator.torgb1.0.weight").unwrap().data.iter_mut().for_each(|v| *v *= 1.5);
    assert!(resume(ck, "old-torgb").unwrap() != want, "{label}: the fading-out toRGB was not used");
    let mut ck = checkpoint::load(&saved).unwrap();
    ck.meta["progress"] = serde_json::json!({ "level": 1, "alpha": 1.0 });
    let err = format!("{:#}", resume(ck, "wrong-progress").expect_err("a record that disagrees with the schedule"));
    assert!(err.contains("`progress`"), "{err}");
    for d in [data, cache, straight] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `--batch-schedule`: a progressive run whose batch changes between levels (2 at 4 px, 4 at
/// 8 px, 2 at 16 px) shows the images the schedule says, and resumes bit for bit from a
/// checkpoint before a batch change (its loader cursor a multiple of no batch) and from
/// mid-fades of levels whose batch differs from the level before.
#[allow(dead_code)] // each test file uses what it needs
pub fn check_progressive_batches<B: Backend>(be: &B, label: &str) {
    use gan_engine::model::Progress;
    let data = tmp(label, "data");
    write_synthetic_sized(&data, 6, 5, 16).unwrap();
    let cache = tmp(label, "cache");
    let opts = TrainOptions {
        size: 16,
        batch: 2,
        batch_schedule: vec![(8, 4)],
        adam_reset: gan_engine::train::grow::AdamReset::Phase,
        progressive: true,
        fade_images: 8,
        stage_images: 2,
        minibatch_std: 2,
        ema_half_life: 40.0,
        ema_ramp: 1.0,
        save_every: 1,
        sample_every: 4,
        keep: 10,
        ..options(&data, &cache, 8)
    };
    // Level 0 (2 images): 1 iteration of 2. Level 1's fade (8 images from 2 shown): 2
    // iterations of 4 (alpha 0, 0.5), its stabilisation (2 images, from 10 shown): 1
    // iteration of 4, 4 images. Level 2's fade from 14 shown (12 in the schedule): 3
    // iterations of 2 (alpha 0.25, 0.5, 0.75), then stable at 20.
    let positions: Vec<_> = (0..8).map(|it| opts.position_at(it).map(|p| (p.progress.level, p.progress.alpha, p.images, p.batch)).unwrap()).collect();
    assert_eq!(
        positions,
        [(0, 1.0, 0, 2), (1, 0.0, 2, 4), (1, 0.5, 6, 4), (1, 1.0, 10, 4), (2, 0.25, 14, 2), (2, 0.5, 16, 2), (2, 0.75, 18, 2), (2, 1.0, 20, 2)]
    );
    let straight = tmp(label, "straight");
    train(be, &opts, &straight, None, false).unwrap();
    let want = tensors(&checkpoint::path_for(&straight, 8));
    let state = |it: u64| RunState::from_checkpoint(&checkpoint::load(&checkpoint::path_for(&straight, it)).unwrap()).unwrap();
    let p = |level, alpha| Some(Progress { level, alpha });
    assert_eq!(
        (1..=8).map(|it| state(it).progress).collect::<Vec<_>>(),
        [p(1, 0.0), p(1, 0.5), p(1, 1.0), p(2, 0.25), p(2, 0.5), p(2, 0.75), p(2, 1.0), p(2, 1.0)]
    );
    // The loader (6 products, a batch that does not fit the rest of an epoch starts the
    // next) after each iteration: batches of 2, 4, 4, 4, 2, 2, 2, 2.
    let loader: Vec<(u64, usize)> = (1..=8).map(|it| (state(it).loader.epoch, state(it).loader.cursor)).collect();
    assert_eq!(loader, [(0, 2), (1, 0), (2, 0), (3, 0), (3, 2), (3, 4), (4, 0), (4, 2)]);
    let resume = |saved: u64, name: &str| -> Vec<(String, Vec<u32>)> {
        let out = tmp(label, name);
        let path = checkpoint::path_for(&straight, saved);
        let before = be.profiler().calls("bce_with_logits_forward");
        train_until(be, &opts, &out, Some((path.clone(), checkpoint::load(&path).unwrap())), false, &mut |_| false).unwrap();
        assert_eq!(be.profiler().calls("bce_with_logits_forward") - before, BCE_PER_ITERATION * (8 - saved), "{name}: only the remaining iterations run");
        let t = tensors(&checkpoint::path_for(&out, 8));
        let _ = std::fs::remove_dir_all(out);
        t
    };
    for (saved, why) in [
        (1, "before the batch grows from 2 to 4 (cursor 2)"),
        (2, "mid-fade of level 1 at batch 4 after batch 2"),
        (5, "mid-fade of level 2 at batch 2 after batch 4"),
    ] {
        let got = resume(saved, &format!("resumed-{saved}"));
        let differ: Vec<&str> = got.iter().zip(&want).filter(|(a, b)| a != b).map(|(a, _)| a.0.as_str()).collect();
        assert!(got.len() == want.len() && differ.is_empty(), "{label}: resumed at {saved} ({why}) differs from 8 straight in {differ:?}");
    }
    for d in [data, cache, straight] {
        let _ = std::fs::remove_dir_all(d);
    }
}
