//! The `text`, `prepare` and `synth` subcommands as a user runs them.

use std::path::PathBuf;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gan-engine")).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).display().to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("data_cli").join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn text_modes() {
    let data = fixture("quirks");
    let o = run(&["text", "--data", &data, "--captions"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 5);
    assert!(stderr(&o).contains("read 9 products, used 5, skipped 4"), "{}", stderr(&o));

    let o = run(&["text", "--data", &data, "--vocab", "--max-features", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Three features, numbered alphabetically, each with a smooth idf of at least 1.
    let terms: Vec<String> = stdout(&o).lines().map(|l| l.split('\t').nth(1).unwrap().to_string()).collect();
    assert_eq!(terms.len(), 3);
    assert!(terms.windows(2).all(|w| w[0] < w[1]), "{terms:?}");
    for line in stdout(&o).lines() {
        let idf: f32 = line.split('\t').nth(2).unwrap().parse().unwrap();
        assert!(idf >= 1.0);
    }

    let o = run(&["text", "--data", &data, "--encode", "Men Blue Shirts", "nothing known zz"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let vectors: Vec<Vec<f32>> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(vectors.len(), 2);
    let norm: f32 = vectors[0].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
    assert!(vectors[1].iter().all(|&v| v == 0.0));
    assert!(stderr(&o).contains("warning: \"nothing known zz\" has no word in the vocabulary"), "{}", stderr(&o));
}

#[test]
fn clear_errors_with_exit_code_2() {
    let o = run(&["text", "--data", "/no/such/folder", "--vocab"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("error: data folder /no/such/folder does not exist"), "{}", stderr(&o));
    let o = run(&["prepare", "--data", &fixture("quirks"), "--size", "48", "--cache-dir", &tmp("err").display().to_string()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("use 32, 64 or 128"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn prepare_then_synth() {
    let cache = tmp("cache");
    let o = run(&["prepare", "--data", &fixture("captions-csv"), "--size", "32", "--crop", "--cache-dir", &cache.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("(2 images,"), "{}", stdout(&o));
    assert!(stderr(&o).contains("32 px, crop"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);

    let out = tmp("synth");
    let o = run(&["synth", "--out", &out.display().to_string(), "-n", "12", "--seed", "3", "--size", "32"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let styles = std::fs::read_to_string(out.join("styles.csv")).unwrap();
    assert_eq!(styles.lines().count(), 13);
    assert_eq!(std::fs::read_dir(out.join("images")).unwrap().count(), 12);
    let o = run(&["text", "--data", &out.display().to_string(), "--captions"]);
    assert_eq!(stdout(&o).lines().count(), 12);
}
