//! `gan-engine serve` on a free loopback port, driven through its HTTP API: every endpoint,
//! every error, concurrent clients, and the same PNG bytes as `gan-engine sample`.

use base64::Engine;
use gan_engine::serve::{Options, Server};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gan-engine-serve-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gan-engine"))
}

/// A small run folder (synthetic catalogue, 32 px, width 8, 2 iterations), trained once
/// per test binary by the command line, with its sample grids and loss plot.
fn run_folder() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = tmp("run");
        let cache = std::env::temp_dir().join("gan-engine-test-cache");
        let out = bin()
            .args(["train", "--size", "32", "--width", "8", "--batch", "16", "--iters", "2", "--save-every", "1", "--sample-every", "1", "--device", "cpu"])
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--out")
            .arg(&run)
            .output()
            .unwrap();
        assert!(out.status.success(), "train failed: {}", String::from_utf8_lossy(&out.stderr));
        run
    })
}

/// A server on a free loopback port, stopped when dropped.
struct Running {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    async fn start(checkpoint: &Path) -> Running {
        let opts = Options { checkpoint: checkpoint.to_path_buf(), host: "127.0.0.1".into(), port: 0, device: "cpu".into(), drawing: Default::default() };
        let server = Server::bind(&opts).await.unwrap();
        let addr = server.addr();
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running { base: format!("http://{addr}"), stop: Some(stop), task: Some(task) }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server and checks that it shut down cleanly.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(c: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let r = c.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn get_json(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The decoded PNG files of an answer's `images`.
fn pngs(answer: &Value) -> Vec<Vec<u8>> {
    answer["images"].as_array().unwrap().iter().map(|s| base64::engine::general_purpose::STANDARD.decode(s.as_str().unwrap()).unwrap()).collect()
}

/// `gan-engine sample ... --out-dir DIR`: the files it writes, by name (the folder is
/// removed).
fn sample_cli(args: &[&str]) -> HashMap<String, Vec<u8>> {
    let dir = tmp(&format!("cli-{}", args.join("-").replace(|c: char| !c.is_ascii_alphanumeric(), "_")));
    let out = bin().arg("sample").arg("--checkpoint").arg(run_folder()).args(args).arg("--out-dir").arg(&dir).args(["--device", "cpu"]).output().unwrap();
    assert!(out.status.success(), "sample {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let files =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap()).map(|e| (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap())).collect();
    std::fs::remove_dir_all(&dir).unwrap();
    files
}

fn file<'a>(files: &'a HashMap<String, Vec<u8>>, name: &str) -> &'a [u8] {
    files.get(name).unwrap_or_else(|| panic!("sample wrote no {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_the_model_and_the_run() {
    let run = run_folder();
    let s = Running::start(run).await;
    let c = client();

    // The page and its two files, embedded, nothing from another host.
    for (path, kind, needle) in [("/", "text/html", "gan-engine studio"), ("/app.js", "text/javascript", "/api/sample"), ("/style.css", "text/css", ".grid")] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains(needle), "{path} lacks {needle}");
        assert!(!body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"), "{path} refers to another host");
    }

    let (status, info) = get_json(&c, &s.url("/api/info")).await;
    assert_eq!(status, 200);
    let ck = gan_engine::train::checkpoint::resolve(run).unwrap();
    assert_eq!(info["checkpoint"], ck.display().to_string());
    assert_eq!(info["file"], "step-00000002.safetensors");
    assert_eq!((info["iteration"].as_u64(), info["size"].as_u64(), info["width"].as_u64()), (Some(2), Some(32), Some(8)));
    assert_eq!(info["data"], Value::Null, "trained on the synthetic catalogue");
    assert_eq!(info["device"].as_str().map(|d| d.starts_with("cpu")), Some(true), "{info}");
    assert_eq!(info["limits"]["max_n"], 64);
    assert_eq!(info["limits"]["max_text_chars"], 300);

    // The run folder's sample grids and loss plot, served as PNG.
    let runinfo = &info["run"];
    let samples = runinfo["samples"].as_array().unwrap();
    assert_eq!(samples.iter().map(|s| s["iteration"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(runinfo["captions"].as_array().unwrap().len(), 8);
    for url in [runinfo["loss_plot"].as_str().unwrap(), samples[1]["url"].as_str().unwrap()] {
        let r = c.get(s.url(url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{url}");
        assert_eq!(r.headers()["content-type"], "image/png");
        image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    }
    let grid = c.get(s.url(samples[1]["url"].as_str().unwrap())).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(grid.as_ref(), std::fs::read(run.join("samples/step-00000002.png")).unwrap(), "the grid file as it is");

    // The vocabulary is the checkpoint's.
    let (status, vocab) = get_json(&c, &s.url("/api/vocabulary")).await;
    assert_eq!(status, 200);
    let state = gan_engine::train::run::RunState::from_checkpoint(&gan_engine::train::checkpoint::load(&ck).unwrap()).unwrap();
    let words: Vec<String> = vocab["words"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_string()).collect();
    assert_eq!(words, state.tfidf.vocab);

    // A checkpoint given as a file still has its run; a file elsewhere has none.
    let lone = tmp("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(&ck, lone.join("model.safetensors")).unwrap();
    s.stop().await;
    let s = Running::start(&lone.join("model.safetensors")).await;
    let (_, info) = get_json(&c, &s.url("/api/info")).await;
    assert_eq!(info["run"], Value::Null);
    let (status, e) = get_json(&c, &s.url("/api/run/loss.png")).await;
    assert_eq!(status, 404);
    assert!(e["error"].as_str().unwrap().contains("run folder"), "{e}");
    s.stop().await;
    let _ = std::fs::remove_dir_all(lone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_the_bytes_of_gan_engine_sample() {
    let s = Running::start(run_folder()).await;
    let c = client();

    // A grid's worth: /api/sample (text, seed, n) against sample --text --seed -n --out-dir.
    let text = "Women Red Striped Dress";
    let (status, a) = post(&c, &s.url("/api/sample"), json!({"text": text, "seed": 5, "n": 6})).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!((a["size"].as_u64(), a["seed"].as_u64(), a["n"].as_u64(), a["first"].as_u64()), (Some(32), Some(5), Some(6), Some(0)));
    let got = pngs(&a);
    assert_eq!(got.len(), 6);
    let files = sample_cli(&["--text", text, "--seed", "5", "-n", "6"]);
    for (i, png) in got.iter().enumerate() {
        assert_eq!(png, file(&files, &format!("row00-col{i:02}.png")), "image {i}");
        let img = image::load_from_memory(png).unwrap();
        assert_eq!((img.width(), img.height()), (32, 32));
    }
    assert!(a["milliseconds"].as_f64().unwrap() > 0.0);
    // The words as the model reads them: "women", "red", ... each known or not.
    let words = a["words"].as_array().unwrap();
    assert_eq!(words.iter().map(|w| w["word"].as_str().unwrap()).collect::<Vec<_>>(), ["women", "red", "striped", "dress"]);
    assert!(words.iter().all(|w| w["known"].is_boolean()));

    // Images 60..68 of a seed are images 60..68 of `sample -n 70`, across its 64-image chunk.
    let (status, b) = post(&c, &s.url("/api/sample"), json!({"text": "Men Blue Shirt", "seed": 11, "n": 8, "first": 60})).await;
    assert_eq!(status, 200, "{b}");
    let files = sample_cli(&["--text", "Men Blue Shirt", "--seed", "11", "-n", "70"]);
    for (i, png) in pngs(&b).iter().enumerate() {
        assert_eq!(png, file(&files, &format!("row00-col{:02}.png", 60 + i)), "image {}", 60 + i);
    }

    // One image as a PNG file.
    let r = c.get(s.url("/api/sample.png?text=Men+Blue%20Shirt&seed=11&index=63")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(r.headers()["content-disposition"].to_str().unwrap().contains("design-11-63.png"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), file(&files, "row00-col63.png"));

    // A text without a known word still draws, with a warning, as `sample` does.
    let (status, w) = post(&c, &s.url("/api/sample"), json!({"text": "zzqx qqzy", "seed": 2, "n": 2})).await;
    assert_eq!(status, 200, "{w}");
    assert!(w["warning"].as_str().unwrap().contains("no word"), "{w}");
    assert!(w["words"].as_array().unwrap().iter().all(|w| w["known"] == false));
    let files = sample_cli(&["--text", "zzqx qqzy", "--seed", "2", "-n", "2"]);
    assert_eq!(pngs(&w)[1], file(&files, "row00-col01.png"));
    let (_, ok) = post(&c, &s.url("/api/sample"), json!({"text": text})).await;
    assert_eq!((ok["warning"].clone(), ok["n"].as_u64(), ok["seed"].as_u64()), (Value::Null, Some(8), Some(0)), "defaults: n 8, seed 0");

    // The walk: row `index` of sample --interpolate A B --steps S -n index+1.
    let (status, walk) = post(&c, &s.url("/api/interpolate"), json!({"a": "Women Red Dress", "b": "Men Blue Shirt", "seed": 7, "index": 2, "steps": 5})).await;
    assert_eq!(status, 200, "{walk}");
    assert_eq!((walk["steps"].as_u64(), walk["index"].as_u64()), (Some(5), Some(2)));
    let frames = pngs(&walk);
    assert_eq!(frames.len(), 5);
    let files = sample_cli(&["--interpolate", "Women Red Dress", "Men Blue Shirt", "--steps", "5", "-n", "3", "--seed", "7"]);
    for (c, png) in frames.iter().enumerate() {
        assert_eq!(png, file(&files, &format!("row02-col{c:02}.png")), "walk step {c}");
    }
    // Its ends are the caption images with the same noise: index 2 of seed 7.
    let (_, end) = post(&c, &s.url("/api/sample"), json!({"text": "Men Blue Shirt", "seed": 7, "n": 1, "first": 2})).await;
    assert_eq!(pngs(&end)[0], frames[4], "the walk's last step is B with the same noise");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_json_error_naming_the_field() {
    let s = Running::start(run_folder()).await;
    let c = client();
    let long = "x".repeat(301);
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        ("POST", "/api/sample", Some(String::new()), 400, "JSON object"),
        ("POST", "/api/sample", Some("{\"text\": ".into()), 400, "bad JSON"),
        ("POST", "/api/sample", Some("[1, 2]".into()), 400, "bad JSON"),
        ("POST", "/api/sample", Some(r#"{"seed": 1}"#.into()), 400, "`text`"),
        ("POST", "/api/sample", Some(r#"{"text": "a", "n": 0}"#.into()), 400, "`n` is 0"),
        ("POST", "/api/sample", Some(r#"{"text": "a", "n": 65}"#.into()), 400, "`n` is 65"),
        ("POST", "/api/sample", Some(r#"{"text": "a", "n": "8"}"#.into()), 400, "field `n`"),
        ("POST", "/api/sample", Some(r#"{"text": "a", "n": 2.5}"#.into()), 400, "field `n`"),
        ("POST", "/api/sample", Some(r#"{"text": "a", "seed": -1}"#.into()), 400, "field `seed`"),
        ("POST", "/api/sample", Some(r#"{"text": 5}"#.into()), 400, "field `text`"),
        ("POST", "/api/sample", Some(r#"{"text": "a", "colour": "red"}"#.into()), 400, "field `colour`"),
        ("POST", "/api/sample", Some(r#"{"text": "a", "first": 9999, "n": 2}"#.into()), 400, "`first`"),
        ("POST", "/api/sample", Some(r#"{"text": "a", "first": 18446744073709551615}"#.into()), 400, "`first`"),
        ("POST", "/api/sample", Some(format!(r#"{{"text": "{long}"}}"#)), 400, "`text` has 301 characters"),
        ("POST", "/api/sample", Some(format!(r#"{{"text": "{}"}}"#, "y".repeat(20_000))), 413, "over 16384 bytes"),
        ("POST", "/api/interpolate", Some(r#"{"a": "x"}"#.into()), 400, "`b`"),
        ("POST", "/api/interpolate", Some(r#"{"a": "x", "b": "y", "steps": 1}"#.into()), 400, "`steps` is 1"),
        ("POST", "/api/interpolate", Some(r#"{"a": "x", "b": "y", "steps": 33}"#.into()), 400, "`steps` is 33"),
        ("POST", "/api/interpolate", Some(r#"{"a": "x", "b": "y", "index": 10000}"#.into()), 400, "`index`"),
        ("POST", "/api/interpolate", Some(format!(r#"{{"a": "x", "b": "{long}"}}"#)), 400, "`b` has 301"),
        ("GET", "/api/sample.png?seed=1", None, 400, "text"),
        ("GET", "/api/sample.png?text=a&index=x", None, 400, "index"),
        ("GET", "/api/sample.png?text=a&index=10000", None, 400, "`index`"),
        ("GET", "/api/sample", None, 405, "use POST"),
        ("GET", "/api/interpolate", None, 405, "use POST"),
        ("POST", "/api/info", Some("{}".into()), 405, "use GET"),
        ("DELETE", "/api/vocabulary", None, 405, "use GET"),
        ("GET", "/api/nothing", None, 404, "/api/nothing"),
        ("GET", "/etc/passwd", None, 404, "no such page"),
        ("GET", "/api/run/samples/..%2F..%2Fcheckpoints", None, 404, "not a sample grid"),
        ("GET", "/api/run/samples/step-00000099.png", None, 404, "no step-00000099.png"),
    ];
    for (method, path, body, status, needle) in cases {
        let mut r = c.request(method.parse().unwrap(), s.url(path));
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        let r = r.send().await.unwrap();
        let got = r.status().as_u16();
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{method} {path}");
        let e: Value = r.json().await.unwrap();
        let msg = e["error"].as_str().unwrap_or_else(|| panic!("{method} {path}: no error message in {e}"));
        assert_eq!(got, status, "{method} {path}: {msg}");
        assert!(msg.contains(needle), "{method} {path}: {msg:?} lacks {needle:?}");
    }
    // Still answering after all that.
    let (status, _) = post(&c, &s.url("/api/sample"), json!({"text": "Red", "n": 1})).await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_each_get_their_own_images() {
    let s = Running::start(run_folder()).await;
    let c = client();
    let texts = ["Women Red Dress", "Men Blue Shirt", "Black Shoe", "Green Cap"];
    // The answers one at a time...
    let mut expected = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let (status, a) = post(&c, &s.url("/api/sample"), json!({"text": t, "seed": i, "n": 3 + i})).await;
        assert_eq!(status, 200);
        expected.push(pngs(&a));
    }
    let (_, walk) = post(&c, &s.url("/api/interpolate"), json!({"a": texts[0], "b": texts[1], "seed": 9, "steps": 4})).await;
    let walk = pngs(&walk);
    // ...then 8 clients at once, 3 rounds each, sample and walk mixed, while others read
    // the page and the vocabulary.
    let mut tasks = Vec::new();
    for client_id in 0..8usize {
        let (c, base, expected, walk) = (c.clone(), s.base.clone(), expected.clone(), walk.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..3 {
                let i = (client_id + round) % texts.len();
                if (client_id + round) % 3 == 0 {
                    let (status, a) = post(&c, &format!("{base}/api/interpolate"), json!({"a": texts[0], "b": texts[1], "seed": 9, "steps": 4})).await;
                    assert_eq!(status, 200, "{a}");
                    assert!(pngs(&a) == walk, "client {client_id} round {round}: another walk");
                } else {
                    let (status, a) = post(&c, &format!("{base}/api/sample"), json!({"text": texts[i], "seed": i, "n": 3 + i})).await;
                    assert_eq!(status, 200, "{a}");
                    assert!(pngs(&a) == expected[i], "client {client_id} round {round}: images of another request");
                }
                let (status, v) = get_json(&c, &format!("{base}/api/vocabulary")).await;
                assert_eq!(status, 200);
                assert!(!v["words"].as_array().unwrap().is_empty());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A client that gives up mid-request leaves the server answering the next one.
    let slow = c.post(s.url("/api/sample")).json(&json!({"text": "Red", "n": 64})).timeout(std::time::Duration::from_millis(1)).send().await;
    assert!(slow.is_err() || slow.unwrap().status().is_success());
    let (status, a) = post(&c, &s.url("/api/sample"), json!({"text": texts[0], "seed": 0, "n": 3})).await;
    assert_eq!(status, 200);
    assert!(pngs(&a) == expected[0]);
    s.stop().await;
}

/// The command itself: no checkpoint is an error that says how to get one; with one, it
/// prints the address, answers, and stops cleanly on SIGTERM.
#[test]
fn the_serve_command() {
    let out = bin().arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--checkpoint") && err.contains("gan-engine train") && err.contains("trains none"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let missing = tmp("missing");
    let out = bin().arg("serve").arg("--checkpoint").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let out = bin().arg("serve").arg("--checkpoint").arg(run_folder()).args(["--device", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--device nope"));

    // A port that is taken is an error naming --port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = bin().arg("serve").arg("--checkpoint").arg(run_folder()).args(["--device", "cpu", "--port", &port]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"), "{}", String::from_utf8_lossy(&out.stderr));
    drop(taken);

    let mut child = bin()
        .arg("serve")
        .arg("--checkpoint")
        .arg(run_folder())
        .args(["--device", "cpu", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {line:?}")).to_string();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with('/'), "{url}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let info = rt.block_on(async { get_json(&client(), &format!("{url}api/info")).await });
    assert_eq!(info.0, 200);
    assert_eq!(info.1["iteration"], 2);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exits 0 on SIGTERM, got {status}");
}
