//! What a hostile but realistic user can do to a run, and what they get: diverged runs stop
//! without saving, one run per folder, damaged checkpoints and data are refused or skipped
//! with a message that names what is wrong, and nothing panics.
//!
//! Every test drives the binary. `GAN_ENGINE_BIN=path/to/gan-engine cargo test --release
//! --test robustness` runs them against another build, which is how each was seen to fail
//! on the code before its fix.

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(std::env::var_os("GAN_ENGINE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_gan-engine").into()))
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("robustness").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2, one `error:` line holding every needle, no panic.
fn fails(o: &Output, needles: &[&str]) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(!e.contains("panicked") && !e.contains("RUST_BACKTRACE"), "{e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{e}");
    for n in needles {
        assert!(errors[0].contains(n), "expected {n:?} in {:?}", errors[0]);
    }
    e
}

fn succeeds(o: &Output) -> String {
    let e = stderr(o);
    assert!(o.status.success(), "{e}");
    e
}

/// A small run on the synthetic catalogue: `train --size 32 --width 8 --batch 4` plus `extra`.
fn train(out: &Path, extra: &[&str]) -> Output {
    let cache = out.parent().unwrap().join("cache");
    let mut args = vec!["train", "--size", "32", "--width", "8", "--batch", "4", "--device", "cpu", "--quiet", "--out"];
    let (out, cache) = (s(out), s(&cache));
    args.push(&out);
    args.extend(["--cache-dir", &cache]);
    args.extend(extra);
    run(&args)
}

fn sample(checkpoint: &Path, dir: &Path) -> Output {
    run(&["sample", "--checkpoint", &s(checkpoint), "--text", "Women Red Dress", "-n", "2", "--out", &s(&dir.join("grid.png")), "--device", "cpu"])
}

fn checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints")).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "safetensors"));
    v.sort();
    v
}

struct Tensor {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Rewrites a checkpoint file through the safetensors crate alone, so that damage the
/// program refuses to write can be made.
fn edit_checkpoint(src: &Path, dst: &Path, edit: impl FnOnce(&mut Value, &mut Vec<Tensor>)) {
    let bytes = std::fs::read(src).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta: Value = serde_json::from_str(&header.metadata().as_ref().unwrap()["gan_engine"]).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<Tensor> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| Tensor { name, shape: v.shape().to_vec(), data: v.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect() })
        .collect();
    edit(&mut meta, &mut tensors);
    let raw: Vec<Vec<u8>> = tensors.iter().map(|t| t.data.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, TensorView)> =
        tensors.iter().zip(&raw).map(|(t, b)| (t.name.clone(), TensorView::new(Dtype::F32, t.shape.clone(), b).unwrap())).collect();
    let data = safetensors::serialize(views, Some(HashMap::from([("gan_engine".to_string(), meta.to_string())]))).unwrap();
    std::fs::write(dst, data).unwrap();
}

/// One damage done to a checkpoint's metadata and tensors.
type Edit = Box<dyn FnOnce(&mut Value, &mut Vec<Tensor>)>;

fn poison(tensors: &mut [Tensor], name: &str, value: f32) {
    tensors.iter_mut().find(|t| t.name == name).unwrap().data[0] = value;
}

/// A good run of 4 iterations, checkpoints at 2 and 4.
fn good_run(dir: &Path) -> PathBuf {
    let run = dir.join("good");
    succeeds(&train(&run, &["--iters", "4", "--save-every", "2", "--keep", "5"]));
    run
}

/// Issue item 1: A diverged run stops with the iteration and the tensor named, and saves nothing.
#[test]
fn a_diverged_run_stops_and_saves_no_non_finite_state() {
    let dir = tmp("diverged");
    let run = dir.join("run");
    let o = train(&run, &["--iters", "30", "--save-every", "5", "--lr", "1e10"]);
    fails(&o, &["diverged", "between iterations 0 and 5", "tensor", "no checkpoint was written"]);
    assert!(checkpoints(&run).is_empty(), "{:?}", checkpoints(&run));

    // Pinned outputs of D are a dead run: said once, with the iteration, before the state
    // check at the end finds the non-finite statistics.
    let run = dir.join("pinned");
    let o = train(&run, &["--iters", "40", "--save-every", "100", "--sample-every", "100", "--lr", "1e10"]);
    let e = fails(&o, &["diverged"]);
    let warnings: Vec<&str> = e.lines().filter(|l| l.contains("pinned at 0 or 1 since iteration")).collect();
    assert_eq!(warnings.len(), 1, "{e}");
    assert!(warnings[0].starts_with("warning: iteration ") && warnings[0].contains("start again with a lower --lr"), "{e}");
}

/// Issue items 1 and 6: A checkpoint holding NaN or Inf is refused by `sample` and `--resume`, naming
/// the tensor; a run folder whose newest one is poisoned falls back to the one before.
#[test]
fn a_non_finite_checkpoint_is_refused_when_loaded() {
    let dir = tmp("nonfinite");
    let good = good_run(&dir);
    let last = checkpoints(&good).pop().unwrap();
    let nan = dir.join("nan.safetensors");
    edit_checkpoint(&last, &nan, |_, t| poison(t, "generator.main.1.running_var", f32::NAN));
    fails(&sample(&nan, &dir), &["nan.safetensors", "generator.main.1.running_var", "NaN"]);
    let inf = dir.join("inf.safetensors");
    edit_checkpoint(&last, &inf, |_, t| poison(t, "optimizer.generator.main.0.weight.exp_avg_sq", f32::INFINITY));
    let o = train(&dir.join("resumed"), &["--resume", &s(&inf), "--iters", "6"]);
    let e = fails(&o, &["inf.safetensors", "exp_avg_sq", "inf"]);
    assert!(!e.contains("last good checkpoint"), "{e}");
    assert!(!dir.join("grid.png").exists());
}

/// Issue item 2: A second run on a folder in use is refused; a killed run releases the folder.
#[cfg(unix)]
#[test]
fn one_run_per_folder_and_a_killed_run_releases_it() {
    let dir = tmp("lock");
    let run = dir.join("run");
    let cache = s(&dir.join("cache"));
    let mut first = bin()
        .args(["train", "--size", "32", "--width", "4", "--batch", "4", "--iters", "1000000", "--save-every", "20", "--sample-every", "1000000"])
        .args(["--device", "cpu", "--quiet", "--cache-dir", &cache, "--out", &s(&run)])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while checkpoints(&run).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint after 120 s");
        assert!(first.try_wait().unwrap().is_none(), "the first run ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu = ["--device", "cpu", "--quiet", "--cache-dir", &cache, "--out", &s(&run)];
    let second = bin().args(["train", "--size", "32", "--width", "4", "--batch", "4", "--iters", "5"]).args(cpu).output().unwrap();
    let resumed = bin().args(["train", "--resume", &s(&run), "--iters", "2000000"]).args(cpu).output().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    fails(&second, &["--out", "another training run", "process"]);
    fails(&resumed, &["--out", "another training run"]);
    // metrics.csv holds the first run's rows alone, in order.
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let iters: Vec<u64> = metrics.lines().skip(1).map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    assert!(iters.windows(2).all(|w| w[1] == w[0] + 1), "{metrics}");
    // kill -9 released the lock: the run resumes.
    let step: u64 = checkpoints(&run).pop().unwrap().file_stem().unwrap().to_str().unwrap()[5..].parse().unwrap();
    succeeds(&bin().args(["train", "--resume", &s(&run), "--iters", &(step + 2).to_string()]).args(cpu).output().unwrap());
}

/// Issue item 3: Every metadata field is checked when a checkpoint is loaded; the message names it.
#[test]
fn metadata_fields_are_checked_against_each_other_and_the_tensors() {
    let dir = tmp("metadata");
    let good = good_run(&dir);
    let last = checkpoints(&good).pop().unwrap();
    let cases: Vec<(&str, Edit)> = vec![
        (
            "tfidf.idf",
            Box::new(|m, _| {
                m["tfidf"]["idf"].as_array_mut().unwrap().pop();
            }),
        ),
        (
            "tfidf.vocab",
            Box::new(|m, _| {
                m["tfidf"]["vocab"].as_array_mut().unwrap().pop();
                m["tfidf"]["idf"].as_array_mut().unwrap().pop();
            }),
        ),
        (
            "config.noise_dim` and `config.text_dim",
            Box::new(|m, _| {
                m["tfidf"]["vocab"].as_array_mut().unwrap().pop();
                m["tfidf"]["idf"].as_array_mut().unwrap().pop();
                m["config"]["text_dim"] = json!(m["config"]["text_dim"].as_u64().unwrap() - 1);
            }),
        ),
        ("config.width", Box::new(|m, _| m["config"]["width"] = json!(1_000_000_000u64))),
        ("config.size", Box::new(|m, _| m["config"]["size"] = json!(64))),
        ("config", Box::new(|m, _| m["config"]["slope"] = json!(7.5))),
        // A tiled run's checkpoint that says projection lacks the embedding V (the message
        // names discriminator.embed.0.weight: tests/resume checks it).
        (
            "config.text_in_d",
            Box::new(|m, _| {
                m["config"]["text_in_d"] = json!("projection");
                m["options"]["text_in_d"] = json!("projection");
            }),
        ),
        ("config.text_in_d", Box::new(|m, _| m["config"]["text_in_d"] = json!("concat"))),
        ("options.text_in_d", Box::new(|m, _| m["options"]["text_in_d"] = json!("projection"))),
        ("noise_rng", Box::new(|m, _| m["noise_rng"]["s"] = json!([0, 0, 0, 0]))),
        ("step", Box::new(|m, _| m["step"] = json!(3))),
        ("options.keep", Box::new(|m, _| m["options"]["keep"] = json!(0))),
        ("options.size", Box::new(|m, _| m["options"]["size"] = json!(64))),
        ("options.iters", Box::new(|m, _| m["options"]["iters"] = json!(1))),
        ("options.eval_split", Box::new(|m, _| m["options"]["eval_split"] = json!(1.5))),
        ("elapsed_seconds", Box::new(|m, _| m["elapsed_seconds"] = json!(-1.0))),
        ("iteration", Box::new(|m, _| m["iteration"] = json!("four"))),
    ];
    for (i, (field, edit)) in cases.into_iter().enumerate() {
        let bad = dir.join(format!("bad-{i}.safetensors"));
        edit_checkpoint(&last, &bad, edit);
        let needle = format!("field `{field}`");
        fails(&sample(&bad, &dir), &[&needle, &s(&bad)]);
        fails(&train(&dir.join(format!("resumed-{i}")), &["--resume", &s(&bad), "--iters", "6"]), &[&needle]);
    }
    // A loader position the data set does not have is named too (it needs the data set).
    let bad = dir.join("cursor.safetensors");
    edit_checkpoint(&last, &bad, |m, _| m["loader"]["cursor"] = json!(1_000_000_000u64));
    fails(&train(&dir.join("resumed-cursor"), &["--resume", &s(&bad), "--iters", "6"]), &["loader.cursor"]);
}

/// Issue item 4: A model larger than memory is refused before anything is allocated, with how much it
/// needs; no abort, no backtrace.
#[test]
fn a_model_larger_than_memory_is_refused_with_what_it_needs() {
    let dir = tmp("memory");
    let run = dir.join("run");
    let big = |width: &str, batch: &str| {
        let args = ["train", "--size", "32", "--width", width, "--batch", batch, "--iters", "2", "--device", "cpu", "--quiet"];
        bin().args(args).args(["--out", &s(&run), "--cache-dir", &s(&dir.join("cache"))]).output().unwrap()
    };
    fails(&big("100000", "4"), &["--width 100000", "needs at least", "TB", "use a smaller --width"]);
    assert!(!run.exists(), "a refused run leaves no folder");
    fails(&big("8192", "2"), &["--width 8192", "needs at least", "GB"]);
}

/// Writes a 224 x 224 JPEG of a colour pattern (the size of the shared products).
fn write_jpeg(path: &Path, seed: u8) {
    let img = image::RgbImage::from_fn(224, 224, |x, y| image::Rgb([(x ^ y) as u8 ^ seed, (x * y / 97) as u8, seed.wrapping_mul(31) ^ (y as u8)]));
    img.save(path).unwrap();
}

/// Issue item 5: A JPEG cut short is an unreadable image, skipped and counted, not a grey-filled one.
#[test]
fn truncated_jpegs_are_skipped_and_counted() {
    let dir = tmp("truncated");
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    let mut csv = String::from("image,text\n");
    for k in 0..6u8 {
        let p = data.join("images").join(format!("{k}.jpg"));
        write_jpeg(&p, k * 40);
        if k % 2 == 1 {
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
        }
        csv.push_str(&format!("{k}.jpg,Women Red Dress {k}\n"));
    }
    std::fs::write(data.join("captions.csv"), csv).unwrap();
    let o = run(&["prepare", "--data", &s(&data), "--size", "32", "--cache-dir", &s(&dir.join("cache"))]);
    let e = succeeds(&o);
    assert!(e.contains("used 3, skipped 3 (unreadable image 3)"), "{e}");
    assert!(e.contains("truncated"), "{e}");
}

/// Issue item 7: `--data base/` is `--data base`; a data set that changed since the run started is
/// named on resume.
#[test]
fn resume_compares_data_folders_canonically_and_notices_a_changed_data_set() {
    let dir = tmp("data-change");
    let data = dir.join("base");
    succeeds(&run(&["synth", "--out", &s(&data), "-n", "12", "--seed", "3", "--size", "32"]));
    let run_dir = dir.join("run");
    succeeds(&train(&run_dir, &["--data", &s(&data), "--iters", "2", "--save-every", "2"]));
    let slash = format!("{}/", s(&data));
    succeeds(&train(&run_dir, &["--resume", &s(&run_dir), "--data", &slash, "--iters", "3"]));
    // Two products removed from the catalogue.
    let styles = std::fs::read_to_string(data.join("styles.csv")).unwrap();
    let kept: Vec<&str> = styles.lines().take(11).collect();
    std::fs::write(data.join("styles.csv"), kept.join("\n") + "\n").unwrap();
    let o = train(&run_dir, &["--resume", &s(&run_dir), "--iters", "4"]);
    fails(&o, &["has changed since the run started", "12 usable products then, 10 now", "2 products removed"]);
}

/// Issue item 8: A damaged newest checkpoint: `sample` and `--resume` use the newest good one and say
/// which they skipped and why; the resumed run keeps the damaged file, set aside.
#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_newest_good_one() {
    let dir = tmp("fallback");
    let good = good_run(&dir);
    let newest = checkpoints(&good).pop().unwrap();
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let e = succeeds(&sample(&good, &dir));
    assert!(e.contains("warning") && e.contains("skipped") && e.contains("step-00000004.safetensors") && e.contains("truncated"), "{e}");
    let e = succeeds(&train(&good, &["--resume", &s(&good), "--iters", "5"]));
    assert!(e.contains("skipped") && e.contains("step-00000004.safetensors"), "{e}");
    let names: Vec<String> = std::fs::read_dir(good.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.contains(&"step-00000004.safetensors.set-aside".to_string()), "{names:?}");
    assert!(names.contains(&"step-00000005.safetensors".to_string()), "{names:?}");
    // With no good checkpoint left, the error lists each file and why.
    let only_bad = dir.join("only-bad");
    std::fs::create_dir_all(only_bad.join("checkpoints")).unwrap();
    std::fs::write(only_bad.join("checkpoints/step-00000001.safetensors"), b"not a checkpoint").unwrap();
    fails(&sample(&only_bad, &dir), &["holds no checkpoint that loads", "step-00000001.safetensors"]);
}

/// Issue item 9: A byte order mark in captions.jsonl keeps its first row; image paths that leave the
/// data folder are refused.
#[test]
fn caption_files_with_a_bom_or_paths_outside_the_folder() {
    let dir = tmp("captions");
    let data = dir.join("jsonl");
    std::fs::create_dir_all(&data).unwrap();
    write_jpeg(&data.join("a.jpg"), 1);
    write_jpeg(&data.join("b.jpg"), 2);
    std::fs::write(data.join("captions.jsonl"), "\u{feff}{\"image\": \"a.jpg\", \"text\": \"Red Dress\"}\n{\"image\": \"b.jpg\", \"text\": \"Blue Shirt\"}\n")
        .unwrap();
    let o = run(&["text", "--data", &s(&data), "--captions"]);
    let e = succeeds(&o);
    assert!(e.contains("read 2 products, used 2, skipped 0"), "{e}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().collect::<Vec<_>>(), ["Red Dress", "Blue Shirt"]);

    let data = dir.join("csv").join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_jpeg(&data.join("a.jpg"), 1);
    write_jpeg(&dir.join("csv").join("outside.jpg"), 2);
    let abs = s(&dir.join("csv").join("outside.jpg"));
    std::fs::write(data.join("captions.csv"), format!("image,text\na.jpg,Red Dress\n../outside.jpg,Blue Shirt\n{abs},Green Cap\n")).unwrap();
    let o = run(&["text", "--data", &s(&data), "--captions"]);
    let e = succeeds(&o);
    assert!(e.contains("read 3 products, used 1, skipped 2 (image outside the data folder 2)"), "{e}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "Red Dress");
}

/// Issue item 10: The small ones: no folder left by a refused run, `--iters 0` and `-n -1` refused as
/// what they are, checkpoint errors in words, `--device` choices as `--help` lists them.
#[test]
fn small_ones() {
    let dir = tmp("small");
    let out = dir.join("out");
    fails(&train(&out, &["--data", &s(&dir.join("missing")), "--iters", "2"]), &["does not exist"]);
    assert!(!out.exists(), "a refused run leaves no --out folder");
    let o = train(&out, &["--iters", "0"]);
    let e = fails(&o, &["--iters", "at least 1"]);
    assert!(!e.contains("already at iteration"), "{e}");
    assert!(!out.exists());

    let good = good_run(&dir);
    let last = checkpoints(&good).pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let e = fails(&sample(&cut, &dir), &["cut.safetensors", "truncated"]);
    assert!(!e.contains("MetadataIncompleteBuffer") && !e.contains("TensorInvalidInfo"), "{e}");
    let mut header = bytes.clone();
    header[0] = 0xff;
    header[1] = 0xff;
    std::fs::write(&cut, &header).unwrap();
    let e = fails(&sample(&cut, &dir), &["cut.safetensors", "header"]);
    assert!(!e.contains("InvalidHeaderLength"), "{e}");

    let o = run(&["sample", "--checkpoint", &s(&good), "--text", "Red Dress", "-n", "-1", "--out", &s(&dir.join("g.png"))]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("-1") && e.contains("at least 1") && !e.contains("unexpected argument"), "{e}");
    let o = run(&["sample", "--checkpoint", &s(&good), "--text", "Red Dress", "--device", "tpu", "--out", &s(&dir.join("g.png"))]);
    let help = String::from_utf8_lossy(&run(&["sample", "--help"]).stdout).into_owned();
    let e = fails(&o, &["--device tpu"]);
    assert_eq!(e.contains("sim"), help.contains("sim"), "the error's choices are the help's: {e} / {help}");
}
