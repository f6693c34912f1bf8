//! The studio page in a real browser: headless Chromium, driven through chromedriver.
//!
//! Ignored by a plain `cargo test` because it needs Debian's `chromium` and
//! `chromium-driver`; `scripts/test.sh` installs them when missing and runs it with
//! `cargo test --release --locked --test serve_browser -- --ignored`. Run without them, it
//! fails and says what to install: it never passes without a browser.
//!
//! The page is loaded, a description typed, the grid of N designs waited for and checked
//! (decoded images of the model's size), the known-word marking checked against the
//! checkpoint's vocabulary, a design kept, "more like this" clicked, the walk slider moved,
//! the view's link reloaded, and a screenshot saved to `target/tmp/serve-browser/studio.png`.
//!
//! `GAN_ENGINE_STUDIO_CHECKPOINT=RUN` serves that run instead of a tiny synthetic one,
//! `GAN_ENGINE_STUDIO_TEXT` is typed instead of the default description (which has a word
//! no model knows), and `GAN_ENGINE_STUDIO_SCREENSHOT=FILE` copies the screenshot there
//! (the README's picture).

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use gan_engine::serve::{Options, Server};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "needs Chromium and chromedriver: apt-get install -y chromium chromium-driver (Debian), or run bash scripts/test.sh, which installs them";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gan-engine-browser-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// An executable from an environment variable, or on PATH, or the Debian path.
fn find_exe(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n)).chain([Path::new("/usr/bin").join(n)])).find(|p| p.is_file())
}

/// The run to serve: `GAN_ENGINE_STUDIO_CHECKPOINT`, or a tiny synthetic one trained here.
fn checkpoint() -> PathBuf {
    if let Some(p) = std::env::var_os("GAN_ENGINE_STUDIO_CHECKPOINT") {
        return PathBuf::from(p);
    }
    let run = tmp("run");
    let out = Command::new(env!("CARGO_BIN_EXE_gan-engine"))
        .args(["train", "--size", "32", "--width", "8", "--batch", "16", "--iters", "2", "--save-every", "1", "--sample-every", "1", "--device", "cpu"])
        .arg("--cache-dir")
        .arg(std::env::temp_dir().join("gan-engine-test-cache"))
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "train failed: {}", String::from_utf8_lossy(&out.stderr));
    run
}

/// chromedriver on a free loopback port, in a process group of its own that the browsers
/// it starts join; the group is killed when dropped, so a failing test leaves no browser.
struct Driver {
    child: Child,
    url: String,
    /// The browser's profile folder, removed with it.
    profile: PathBuf,
}

impl Driver {
    fn start(exe: &Path, profile: PathBuf) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(exe);
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL}", exe.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on port {port} within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, url: format!("http://127.0.0.1:{port}"), profile }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        #[cfg(unix)]
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Evaluates `script` (a function body) in the page.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// Polls `script` until it returns `true`, at most 30 s.
async fn wait_for(c: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if js(c, script).await == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let status = js(c, "return document.getElementById('status').textContent").await;
            panic!("timed out waiting for {what} (status line: {status})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// True once the grid shows `n` decoded images of `size` px for `text`, and `also` (a JS
/// condition on the grid `g`) holds.
fn grid_ready_and(text: &str, n: usize, size: u64, also: &str) -> String {
    format!(
        "const g = document.getElementById('grid'); const imgs = Array.from(g.querySelectorAll('img'));
         return g.dataset.ready === '1' && g.dataset.text === {text} && imgs.length === {n}
             && imgs.every(i => i.complete && i.naturalWidth === {size} && i.naturalHeight === {size}) && ({also});",
        text = json!(text)
    )
}

fn grid_ready(text: &str, n: usize, size: u64) -> String {
    grid_ready_and(text, n, size, "true")
}

const GRID_SOURCES: &str = "return Array.from(document.querySelectorAll('#grid img')).map(i => i.src)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: scripts/test.sh installs them and runs it"]
async fn the_studio_in_headless_chromium() {
    let chromium = find_exe("CHROMIUM", &["chromium", "chromium-browser"]).unwrap_or_else(|| panic!("no chromium found; {INSTALL}"));
    let chromedriver = find_exe("CHROMEDRIVER", &["chromedriver"]).unwrap_or_else(|| panic!("no chromedriver found; {INSTALL}"));

    let opts = Options { checkpoint: checkpoint(), host: "127.0.0.1".into(), port: 0, device: "cpu".into(), drawing: Default::default() };
    let server = Server::bind(&opts).await.unwrap();
    let base = format!("http://{}", server.addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let info: Value = http.get(format!("{base}/api/info")).send().await.unwrap().json().await.unwrap();
    let size = info["size"].as_u64().unwrap();
    let vocab: Value = http.get(format!("{base}/api/vocabulary")).send().await.unwrap().json().await.unwrap();
    let vocab: Vec<&str> = vocab["words"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();

    let profile = tmp("profile");
    let driver = Driver::start(&chromedriver, profile.clone());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-quic", "--no-first-run", "--no-default-browser-check",
                format!("--user-data-dir={}", profile.display()), "--window-size=1400,1200",
            ],
        }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}; {INSTALL}"));

    // Load, then type a description and choose 6 designs.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_for(&c, "the model line", "return document.getElementById('model').textContent.includes('iteration')").await;
    let n = c.find(Locator::Css("#n")).await.unwrap();
    n.clear().await.unwrap();
    n.send_keys("6").await.unwrap();
    let text = std::env::var("GAN_ENGINE_STUDIO_TEXT").unwrap_or_else(|_| "Women Red Striped Dress Zyxq".into());
    let text = text.as_str();
    let input = c.find(Locator::Css("#text")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
    wait_for(&c, "6 designs for the typed text", &grid_ready(text, 6, size)).await;
    let first_grid = js(&c, GRID_SOURCES).await;

    // The words the model knows are marked, the others dimmed, as the vocabulary says.
    let marked = js(&c, "return ['known', 'unknown'].map(k => Array.from(document.querySelectorAll('#words .word.' + k)).map(s => s.textContent))").await;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for w in text.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| w.chars().count() >= 2) {
        if vocab.contains(&w.to_lowercase().as_str()) { &mut known } else { &mut unknown }.push(w);
    }
    assert_eq!(marked, json!([known, unknown]), "the marking of {text:?}");
    assert!(!known.is_empty(), "no word of {text:?} is known to this model: {marked}");
    if !unknown.is_empty() {
        let dimmed = js(&c, "return getComputedStyle(document.querySelector('#words .word.unknown')).opacity").await;
        assert!(dimmed.as_str().unwrap().parse::<f64>().unwrap() < 1.0, "unknown words are dimmed: opacity {dimmed}");
    }

    // Every design has a PNG download of its own bytes.
    let links = js(&c, "return Array.from(document.querySelectorAll('#grid a[download]')).map(a => [a.download, a.href])").await;
    assert_eq!(links.as_array().unwrap().len(), 6);
    assert!(links[0][0].as_str().unwrap().ends_with(".png") && links[0][1] == first_grid[0]);

    // Keep design 3: it shows on the side with its noise.
    c.find(Locator::Css("#grid figure[data-index='2'] img")).await.unwrap().click().await.unwrap();
    wait_for(&c, "the kept design", "const i = document.getElementById('chosen'); return !i.hidden && i.complete && i.naturalWidth > 0").await;
    let caption = js(&c, "return document.getElementById('chosen-caption').textContent").await;
    assert!(caption.as_str().unwrap().contains("noise 3 of seed"), "{caption}");
    let kept_before = js(&c, "return document.getElementById('chosen').src").await;
    assert_eq!(kept_before, first_grid[2], "the kept design is design 3 of the grid");

    // More like this: the same text, new noise; the kept design stays.
    let seed_before = js(&c, "return document.getElementById('seed').value").await;
    c.find(Locator::Css("#more")).await.unwrap().click().await.unwrap();
    wait_for(&c, "a grid with a new seed", &grid_ready_and(text, 6, size, &format!("g.dataset.seed !== {seed_before}"))).await;
    let second_grid = js(&c, GRID_SOURCES).await;
    assert_ne!(first_grid, second_grid, "new noise draws other designs");
    assert_eq!(js(&c, "return document.getElementById('text').value").await, json!(text));

    // The walk: the slider moves through the frames, from the text to the other one.
    wait_for(
        &c,
        "the walk",
        "const s = document.getElementById('walk-slider'); return s.dataset.ready === '1' && document.getElementById('walk-image').complete",
    )
    .await;
    let steps: u64 = js(&c, "return document.getElementById('walk-slider').max").await.as_str().unwrap().parse().unwrap();
    assert_eq!(steps, 8, "9 steps by default");
    let frame0 = js(&c, "return document.getElementById('walk-image').src").await;
    let slider = c.find(Locator::Css("#walk-slider")).await.unwrap();
    slider.send_keys(&char::from(Key::End).to_string()).await.unwrap();
    wait_for(&c, "the last frame of the walk", "return document.getElementById('walk-image').dataset.frame === '8'").await;
    let frame_last = js(&c, "return document.getElementById('walk-image').src").await;
    assert_ne!(frame0, frame_last, "the walk's ends differ");
    for _ in 0..4 {
        slider.send_keys(&char::from(Key::Left).to_string()).await.unwrap();
    }
    wait_for(&c, "the middle of the walk", "return document.getElementById('walk-image').dataset.frame === '4'").await;
    let label = js(&c, "return document.getElementById('walk-label').textContent").await;
    assert!(label.as_str().unwrap().starts_with("50% of the way"), "{label}");

    // The link reproduces the view: text, seed, N and the kept design.
    let link = js(&c, "return document.getElementById('permalink').href").await;
    let link = link.as_str().unwrap().to_string();
    assert!(link.starts_with(&base) && link.contains("seed=") && link.contains("n=6") && link.contains("keep="), "{link}");
    c.goto(&link).await.unwrap();
    wait_for(&c, "the linked view", &grid_ready(text, 6, size)).await;
    assert_eq!(js(&c, GRID_SOURCES).await, second_grid, "the link draws the same designs");
    wait_for(&c, "the linked kept design", "const i = document.getElementById('chosen'); return !i.hidden && i.complete && i.naturalWidth > 0").await;
    assert_eq!(js(&c, "return document.getElementById('chosen').src").await, kept_before);

    // The run's grids and loss plot, when the checkpoint is a run folder.
    if info["run"].is_object() {
        wait_for(
            &c,
            "the run's pictures",
            "const g = document.getElementById('run-grid'); return !document.getElementById('run-panel').hidden && g.complete && g.naturalWidth > 0",
        )
        .await;
    }
    // Nothing was fetched from another host.
    let resources = js(&c, "return performance.getEntriesByType('resource').map(e => e.name)").await;
    for r in resources.as_array().unwrap() {
        assert!(r.as_str().unwrap().starts_with(&base), "the page fetched {r}");
    }

    // A screenshot of the whole view for the test output (and the README when asked).
    wait_for(&c, "the walk", "return document.getElementById('walk-slider').dataset.ready === '1'").await;
    let slider = c.find(Locator::Css("#walk-slider")).await.unwrap();
    slider.send_keys(&char::from(Key::End).to_string()).await.unwrap();
    for _ in 0..4 {
        slider.send_keys(&char::from(Key::Left).to_string()).await.unwrap();
    }
    wait_for(
        &c,
        "the walk's middle frame",
        "const i = document.getElementById('walk-image'); return i.dataset.frame === '4' && i.complete && i.naturalWidth > 0",
    )
    .await;
    let shot = c.screenshot().await.unwrap();
    let img = image::load_from_memory(&shot).unwrap();
    assert!(img.width() >= 1000 && img.height() >= 800, "{}x{}", img.width(), img.height());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-browser");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("studio.png"), &shot).unwrap();
    println!("screenshot: {}", dir.join("studio.png").display());
    if let Some(p) = std::env::var_os("GAN_ENGINE_STUDIO_SCREENSHOT") {
        std::fs::write(&p, &shot).unwrap();
        println!("screenshot copied to {}", Path::new(&p).display());
    }

    // N past the limit draws the limit, and the box says so.
    let n = c.find(Locator::Css("#n")).await.unwrap();
    n.clear().await.unwrap();
    n.send_keys(&format!("100{}", char::from(Key::Tab))).await.unwrap();
    wait_for(&c, "64 designs", &grid_ready(text, 64, size)).await;
    assert_eq!(js(&c, "return document.getElementById('n').value").await, json!("64"));

    c.close().await.unwrap();
    drop(driver);
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    if std::env::var_os("GAN_ENGINE_STUDIO_CHECKPOINT").is_none() {
        let _ = std::fs::remove_dir_all(opts.checkpoint);
    }
}
