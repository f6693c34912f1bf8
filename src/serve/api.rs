//! The JSON API under `/api/` and the embedded page. README "The studio" documents it.
//!
//! Every error is JSON, `{"error": "..."}`, naming the field or the path: 400 for bad JSON
//! or parameters, 404 for an unknown path, 405 for a wrong method, 413 for a body over
//! `BODY_LIMIT`, 503 when the generator's queue is full, 500 when the engine fails.

use super::worker::{Drawn, Job, JobError, Worker};
use crate::text::{tokenize, Tfidf};
use axum::body::Bytes;
use axum::extract::{FromRequest, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Most images one request draws (one generator call).
pub const MAX_N: usize = 64;
/// Most characters of one description.
pub const MAX_TEXT_CHARS: usize = 300;
/// Steps of a walk, ends included.
pub const MIN_STEPS: usize = 2;
pub const MAX_STEPS: usize = 32;
/// The highest noise index a request may reach (`first + n - 1`, or a walk's `index`):
/// noise vectors are drawn in order, so this bounds the work of one request.
pub const MAX_INDEX: usize = 9_999;
/// Largest request body, in bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// What the handlers share.
pub struct AppState {
    pub worker: Worker,
    pub tfidf: Tfidf,
    pub model: ModelInfo,
    pub run_dir: Option<PathBuf>,
}

/// The loaded model, as `/api/info` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// The checkpoint file.
    pub checkpoint: String,
    /// Its file name.
    pub file: String,
    /// Training iterations done.
    pub iteration: u64,
    /// Optimizer steps (Adam's t).
    pub step: u64,
    /// Image side in pixels.
    pub size: usize,
    /// Base channel count.
    pub width: usize,
    pub noise_dim: usize,
    pub vocabulary_size: usize,
    /// The backend the generator runs on.
    pub device: String,
    /// The data set the model was trained on (`null`: the built-in synthetic catalogue).
    pub data: Option<String>,
    /// Which generator's weights are used.
    pub weights: String,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page_html))
        .route("/app.js", get(page_js))
        .route("/style.css", get(page_css))
        .route("/api/info", get(info))
        .route("/api/vocabulary", get(vocabulary))
        .route("/api/sample", post(sample))
        .route("/api/sample.png", get(sample_png))
        .route("/api/interpolate", post(interpolate))
        .route("/api/run/loss.png", get(run_loss_plot))
        .route("/api/run/samples/{file}", get(run_sample_grid))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

// ---- errors -------------------------------------------------------------------------

/// An error answer: a status and one sentence for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        match e {
            JobError::Busy => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("the generator is busy ({} requests are waiting); try again in a moment", super::worker::QUEUE),
            },
            JobError::Failed(e) => ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: format!("the generator failed: {e:#}") },
        }
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such page or endpoint: {}; the API is GET /api/info, GET /api/vocabulary, POST /api/sample, GET /api/sample.png, POST /api/interpolate",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let allowed = match uri.path() {
        "/api/sample" | "/api/interpolate" => "POST",
        _ => "GET",
    };
    ApiError { status: StatusCode::METHOD_NOT_ALLOWED, message: format!("{method} {} is not allowed: use {allowed}", uri.path()) }
}

/// A JSON body parsed into `T`: any content type, errors 400 naming the field (or 413 for
/// a body over the limit).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            let status = r.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("the request body is over {BODY_LIMIT} bytes")
            } else {
                format!("cannot read the request body: {}", r.body_text())
            };
            ApiError { status, message }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad("the request needs a JSON object as its body, e.g. {\"text\": \"Women Red Dress\", \"seed\": 1, \"n\": 8}"));
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(de) {
            Ok(v) => Ok(JsonBody(v)),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                Err(ApiError::bad(if path == "." || path.is_empty() { format!("bad JSON: {inner}") } else { format!("bad JSON in field `{path}`: {inner}") }))
            }
        }
    }
}

// ---- validation ---------------------------------------------------------------------

fn check_text(field: &str, text: &str) -> Result<(), ApiError> {
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(ApiError::bad(format!("`{field}` has {chars} characters; at most {MAX_TEXT_CHARS} are read")));
    }
    Ok(())
}

fn check_n(n: usize) -> Result<(), ApiError> {
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::bad(format!("`n` is {n}; ask for 1 to {MAX_N} images")));
    }
    Ok(())
}

fn check_index(field: &str, last: usize) -> Result<(), ApiError> {
    if last > MAX_INDEX {
        return Err(ApiError::bad(format!("`{field}` reaches noise vector {last}; the highest is {MAX_INDEX}")));
    }
    Ok(())
}

// ---- the model ----------------------------------------------------------------------

#[derive(Serialize)]
struct InfoAnswer<'a> {
    #[serde(flatten)]
    model: &'a ModelInfo,
    limits: Limits,
    /// The run folder's files, when the checkpoint sits in one.
    run: Option<RunFiles>,
}

#[derive(Serialize)]
struct Limits {
    max_n: usize,
    max_text_chars: usize,
    min_steps: usize,
    max_steps: usize,
    max_index: usize,
    body_bytes: usize,
}

#[derive(Serialize)]
struct RunFiles {
    folder: String,
    /// `/api/run/loss.png`, or null when the run has none yet.
    loss_plot: Option<String>,
    /// The training sample grids, oldest first.
    samples: Vec<RunSample>,
    /// The captions of the grids' rows, top to bottom.
    captions: Vec<String>,
}

#[derive(Serialize)]
struct RunSample {
    iteration: u64,
    url: String,
}

async fn info(State(s): State<Arc<AppState>>) -> Response {
    // Listed at every call: a run that is still training adds grids.
    let run = match &s.run_dir {
        Some(dir) => Some(run_files(dir.clone()).await),
        None => None,
    };
    let limits =
        Limits { max_n: MAX_N, max_text_chars: MAX_TEXT_CHARS, min_steps: MIN_STEPS, max_steps: MAX_STEPS, max_index: MAX_INDEX, body_bytes: BODY_LIMIT };
    no_cache(Json(InfoAnswer { model: &s.model, limits, run }).into_response())
}

async fn run_files(dir: PathBuf) -> RunFiles {
    let samples_dir = dir.join("samples");
    let mut samples = Vec::new();
    if let Ok(mut rd) = tokio::fs::read_dir(&samples_dir).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            if let Some(it) = e.file_name().to_str().and_then(grid_iteration) {
                samples.push(RunSample { iteration: it, url: format!("/api/run/samples/step-{it:08}.png") });
            }
        }
    }
    samples.sort_by_key(|s| s.iteration);
    let captions = tokio::fs::read_to_string(samples_dir.join("captions.txt")).await.map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default();
    let loss_plot = tokio::fs::metadata(dir.join("loss.png")).await.ok().map(|_| "/api/run/loss.png".to_string());
    RunFiles { folder: dir.display().to_string(), loss_plot, samples, captions }
}

/// The iteration of a sample grid's file name, `step-NNNNNNNN.png`.
fn grid_iteration(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?.strip_suffix(".png")?;
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Serialize)]
struct VocabularyAnswer<'a> {
    /// The words the model reads, alphabetical; a text's other words are ignored.
    words: &'a [String],
    /// How texts are split into words (scikit-learn's `TfidfVectorizer`): lowercased, runs
    /// of two or more letters, digits or underscores.
    tokens: &'static str,
}

async fn vocabulary(State(s): State<Arc<AppState>>) -> Response {
    Json(VocabularyAnswer { words: &s.tfidf.vocab, tokens: r"(?u)\b\w\w+\b, lowercased" }).into_response()
}

// ---- drawing ------------------------------------------------------------------------

fn default_n() -> usize {
    8
}
fn default_steps() -> usize {
    9
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleRequest {
    text: String,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_n")]
    n: usize,
    /// The noise index of the first image: image `first + i` of the seed's stream.
    #[serde(default)]
    first: usize,
}

#[derive(Serialize)]
struct Word {
    word: String,
    known: bool,
}

#[derive(Serialize)]
struct SampleAnswer {
    /// PNG files, base64: image `first + i` is `images[i]`.
    images: Vec<String>,
    size: usize,
    seed: u64,
    first: usize,
    n: usize,
    /// The words of the text as the model splits them, each known or not.
    words: Vec<Word>,
    warning: Option<String>,
    /// Time on the generator thread (generator and PNG encoding).
    milliseconds: f64,
}

fn words(tfidf: &Tfidf, text: &str) -> Vec<Word> {
    tokenize(text).into_iter().map(|w| Word { known: tfidf.index_of(&w).is_some(), word: w }).collect()
}

fn no_known_word(field: &str, text: &str) -> String {
    format!("no word of `{field}` ({text:?}) is in the model's vocabulary; it is drawn from noise alone")
}

fn base64_all(pngs: Vec<Vec<u8>>) -> Vec<String> {
    pngs.iter().map(|p| base64::engine::general_purpose::STANDARD.encode(p)).collect()
}

async fn sample(State(s): State<Arc<AppState>>, JsonBody(r): JsonBody<SampleRequest>) -> Result<Response, ApiError> {
    check_text("text", &r.text)?;
    check_n(r.n)?;
    check_index("first", r.first.saturating_add(r.n - 1))?;
    let warning = s.tfidf.has_no_known_word(&r.text).then(|| no_known_word("text", &r.text));
    let words = words(&s.tfidf, &r.text);
    let Drawn { pngs, seconds } = s.worker.run(Job::Sample { text: r.text, seed: r.seed, first: r.first, n: r.n }).await?;
    let answer =
        SampleAnswer { images: base64_all(pngs), size: s.model.size, seed: r.seed, first: r.first, n: r.n, words, warning, milliseconds: seconds * 1e3 };
    Ok(no_cache(Json(answer).into_response()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageQuery {
    text: String,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    index: usize,
}

async fn sample_png(State(s): State<Arc<AppState>>, q: Result<Query<ImageQuery>, axum::extract::rejection::QueryRejection>) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("bad query: {}; e.g. /api/sample.png?text=Women+Red+Dress&seed=1&index=0", e.body_text())))?;
    check_text("text", &q.text)?;
    check_index("index", q.index)?;
    let Drawn { mut pngs, .. } = s.worker.run(Job::Sample { text: q.text, seed: q.seed, first: q.index, n: 1 }).await?;
    let png = pngs.pop().ok_or_else(|| ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: "the generator drew no image".into() })?;
    let disposition = format!("inline; filename=\"design-{}-{}.png\"", q.seed, q.index);
    let mut r = ([(header::CONTENT_TYPE, "image/png")], png).into_response();
    r.headers_mut().insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).expect("ASCII header"));
    Ok(no_cache(r))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InterpolateRequest {
    a: String,
    b: String,
    #[serde(default)]
    seed: u64,
    /// The noise vector held along the walk: the one of image `index` of `/api/sample`.
    #[serde(default)]
    index: usize,
    #[serde(default = "default_steps")]
    steps: usize,
}

#[derive(Serialize)]
struct InterpolateAnswer {
    /// PNG files, base64, from `a` (first) to `b` (last).
    images: Vec<String>,
    size: usize,
    seed: u64,
    index: usize,
    steps: usize,
    words_a: Vec<Word>,
    words_b: Vec<Word>,
    warning: Option<String>,
    milliseconds: f64,
}

async fn interpolate(State(s): State<Arc<AppState>>, JsonBody(r): JsonBody<InterpolateRequest>) -> Result<Response, ApiError> {
    check_text("a", &r.a)?;
    check_text("b", &r.b)?;
    if !(MIN_STEPS..=MAX_STEPS).contains(&r.steps) {
        return Err(ApiError::bad(format!("`steps` is {}; a walk has {MIN_STEPS} to {MAX_STEPS} steps, ends included", r.steps)));
    }
    check_index("index", r.index)?;
    let warnings: Vec<String> =
        [("a", &r.a), ("b", &r.b)].into_iter().filter(|(_, t)| s.tfidf.has_no_known_word(t)).map(|(f, t)| no_known_word(f, t)).collect();
    let (words_a, words_b) = (words(&s.tfidf, &r.a), words(&s.tfidf, &r.b));
    let Drawn { pngs, seconds } = s.worker.run(Job::Walk { a: r.a, b: r.b, seed: r.seed, index: r.index, steps: r.steps }).await?;
    let answer = InterpolateAnswer {
        images: base64_all(pngs),
        size: s.model.size,
        seed: r.seed,
        index: r.index,
        steps: r.steps,
        words_a,
        words_b,
        warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
        milliseconds: seconds * 1e3,
    };
    Ok(no_cache(Json(answer).into_response()))
}

// ---- the run folder's pictures ------------------------------------------------------

fn no_run() -> ApiError {
    ApiError::not_found(
        "the checkpoint was given as a file outside a run folder, so there are no sample grids or loss plot; pass the run folder to --checkpoint",
    )
}

async fn png_file(path: PathBuf) -> Result<Response, ApiError> {
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok(no_cache(([(header::CONTENT_TYPE, "image/png")], bytes).into_response())),
        Err(_) => Err(ApiError::not_found(format!("the run has no {}", path.file_name().and_then(|n| n.to_str()).unwrap_or("such file")))),
    }
}

async fn run_loss_plot(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let dir = s.run_dir.as_ref().ok_or_else(no_run)?;
    png_file(dir.join("loss.png")).await
}

async fn run_sample_grid(State(s): State<Arc<AppState>>, UrlPath(file): UrlPath<String>) -> Result<Response, ApiError> {
    let dir = s.run_dir.as_ref().ok_or_else(no_run)?;
    // The path is rebuilt from the number, so no name from the request reaches the disk.
    let it = grid_iteration(&file).ok_or_else(|| ApiError::not_found(format!("{file} is not a sample grid's name (step-NNNNNNNN.png)")))?;
    png_file(dir.join("samples").join(format!("step-{it:08}.png"))).await
}

// ---- the page -----------------------------------------------------------------------

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

fn no_cache(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn text_file(content_type: &'static str, body: &'static str) -> Response {
    no_cache(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

async fn page_html() -> Response {
    text_file("text/html; charset=utf-8", INDEX_HTML)
}
async fn page_js() -> Response {
    text_file("text/javascript; charset=utf-8", APP_JS)
}
async fn page_css() -> Response {
    text_file("text/css; charset=utf-8", STYLE_CSS)
}
