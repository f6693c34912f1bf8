//! `gan-engine eval` end to end, and the feature network on the shared products.

mod common;

use gan_engine::backend::cpu::Cpu;
use gan_engine::data::{prepare, synth, DataSource, PrepareOptions};
use gan_engine::eval::features::{FeatureNet, LabelSpace, Targets};
use gan_engine::eval::split;
use gan_engine::model::TextInD;
use gan_engine::train::run::{train, TrainOptions};
use gan_engine::train::Hyper;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gan-engine-eval-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn cache() -> PathBuf {
    std::env::temp_dir().join("gan-engine-test-cache")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gan-engine"))
}

/// A tiny run on the synthetic catalogue at 32 px (two iterations: the figures are not the
/// point here).
fn tiny_run(dir: &Path) {
    let opts = TrainOptions {
        data: None,
        size: 32,
        width: 8,
        batch: 16,
        iters: 2,
        hyper: Hyper::default(),
        seed: 3,
        save_every: 2,
        sample_every: 2,
        keep: 1,
        flip: true,
        crop: false,
        max_features: 256,
        cache_dir: Some(cache()),
        precision: Default::default(),
        eval_split: 0.1,
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
        text_in_d: TextInD::Tile,
    };
    train(&Cpu::new(), &opts, dir, None, false).unwrap();
}

#[test]
fn eval_refuses_more_images_than_the_held_out_split_and_names_its_size() {
    let run = tmp("refuse");
    tiny_run(&run);
    let out = bin().args(["eval", "--checkpoint"]).arg(&run).args(["-n", "5000", "--device", "cpu", "--cache-dir"]).arg(cache()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // The synthetic catalogue's 2,000 products hold out 206 at 0.1.
    assert!(err.contains("-n 5000 is larger than the held-out split") && err.contains("206"), "{err}");
}

/// A folder with captions only (no labels), of synthetic products drawn at 32 px.
fn captions_folder(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut csv = String::from("image,text\n");
    for (i, p) in synth::products(n, 11).iter().enumerate() {
        p.draw(32).save(dir.join("images").join(format!("p{i}.png"))).unwrap();
        csv.push_str(&format!("p{i}.png,{}\n", p.display_name()));
    }
    std::fs::write(dir.join("captions.csv"), csv).unwrap();
}

#[test]
fn eval_of_another_data_set_warns_runs_and_falls_back_to_caption_words() {
    let (run, data, json) = (tmp("foreign-run"), tmp("foreign-data"), tmp("foreign.json"));
    tiny_run(&run);
    captions_folder(&data, 120);
    let out = bin()
        .args(["eval", "--checkpoint"])
        .arg(&run)
        .arg("--data")
        .arg(&data)
        .args(["-n", "6", "--device", "cpu", "--cache-dir"])
        .arg(cache())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: the model was trained on synthetic catalogue"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[1].starts_with("swd=") && lines[1].contains(" real_swd="), "{stdout}");
    assert!(lines[2].starts_with("fd=") && lines[2].contains("kid="), "{stdout}");
    assert!(lines[3].starts_with("precision=") && lines[3].contains("recall="), "{stdout}");
    assert!(lines[4].starts_with("cond_words=") && lines[4].contains("real_cond_words="), "{stdout}");
    assert!(
        lines[5].starts_with("diversity=")
            && lines[5].contains("real_diversity=")
            && lines[5].contains(" background=")
            && lines[5].contains("real_background="),
        "{stdout}"
    );
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for k in [
        "swd",
        "fd",
        "kid",
        "precision",
        "recall",
        "cond_words",
        "diversity",
        "background",
        "real_background",
        "real_swd",
        "real_fd",
        "real_kid",
        "real_precision",
        "real_recall",
        "real_cond_words",
    ] {
        assert!(j.get(k).is_some(), "{k} missing from {j}");
    }
    assert_eq!(j["n"], 6);
}

/// The feature network learns the shared products' labels: on the held-out products every
/// head is far above always answering the most common class.
#[test]
fn the_feature_network_beats_chance_on_the_shared_products() {
    let Some(dir) = common::shared_products() else { return };
    let data = prepare(&DataSource::Folder(dir), &PrepareOptions { size: 32, cache_dir: Some(cache()), progress: false, ..Default::default() }).unwrap();
    let sp = split::split(&data.ids, 0.1);
    let net = FeatureNet::train(&Cpu::new(), &data, &sp, 0, false).unwrap();
    let LabelSpace::Heads(heads) = &net.info.space else { panic!("the shared products have labels") };
    let Targets::Classes(targets) = net.info.space.targets(&data, &sp.held_out) else { panic!() };
    let names: Vec<&str> = heads.iter().map(|(_, h)| h.name.as_str()).collect();
    assert_eq!(names, ["articleType", "baseColour", "gender", "masterCategory"]);
    for ((_, h), t) in heads.iter().zip(&targets) {
        // Class 0 is the most common value in training: the best constant answer.
        let majority = t.iter().filter(|c| **c == 0.0).count() as f64 / t.len() as f64;
        let acc = net.info.held_out_accuracy[&h.name];
        println!("{}: accuracy {acc:.3}, most common class {majority:.3}, {} classes", h.name, h.classes.len());
        assert!(acc > majority + 0.15 && acc > 0.5, "{}: held-out accuracy {acc:.3} against {majority:.3} for the most common class", h.name);
    }
}
