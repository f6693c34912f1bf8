// The studio page: talks to the JSON API of `gan-engine serve` (README, "The studio").
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  vocab: new Set(),
  size: 0,
  maxN: 64,
  maxSteps: 32,
  kept: null, // {seed, index}: the design whose noise is held while the text changes
  walkFrames: [],
};

// The latest request of each kind; a newer one aborts the older (the server then skips it).
const inflight = { grid: null, kept: null, walk: null };

// ---- the API ---------------------------------------------------------------------------

async function api(path, body, kind) {
  let signal;
  if (kind) {
    if (inflight[kind]) inflight[kind].abort();
    inflight[kind] = new AbortController();
    signal = inflight[kind].signal;
  }
  const init = body === undefined ? { signal } : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal };
  const r = await fetch(path, init);
  const j = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(j.error || `HTTP ${r.status}`);
  return j;
}

const png = (b64) => "data:image/png;base64," + b64;
const aborted = (e) => e && e.name === "AbortError";

// ---- the words the model knows ----------------------------------------------------------

// The server's tokenizer (scikit-learn's): lowercase, runs of two or more letters, digits
// or underscores. Known words are marked, unknown ones dimmed; the rest is plain text.
const WORD = /[\p{Alphabetic}\p{N}_]+/gu;

function renderWords() {
  const text = $("text").value;
  const out = $("words");
  out.replaceChildren();
  let last = 0, known = 0, total = 0;
  for (const m of text.matchAll(WORD)) {
    if (m.index > last) out.append(text.slice(last, m.index));
    const lower = m[0].toLowerCase();
    if (Array.from(lower).length < 2) {
      out.append(m[0]);
    } else {
      const span = document.createElement("span");
      const isKnown = state.vocab.has(lower);
      span.className = "word " + (isKnown ? "known" : "unknown");
      span.title = isKnown ? "the model knows this word" : "the model never saw this word: it is ignored";
      span.textContent = m[0];
      out.append(span);
      total += 1;
      known += isKnown ? 1 : 0;
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) out.append(text.slice(last));
  $("word-count").textContent = total ? `${known} of ${total} words known` : "";
}

// ---- inputs ----------------------------------------------------------------------------

function readInt(id, lo, hi, fallback) {
  const text = $(id).value.trim();
  if (text === "") return fallback;
  const v = Math.floor(Number(text));
  if (!Number.isFinite(v)) return fallback;
  return Math.min(hi, Math.max(lo, v));
}
const seed = () => readInt("seed", 0, Number.MAX_SAFE_INTEGER, 0);
const count = () => readInt("n", 1, state.maxN, 8);
const steps = () => readInt("steps", 2, state.maxSteps, 9);

function setStatus(msg, error) {
  const s = $("status");
  s.textContent = msg;
  s.classList.toggle("error", !!error);
}

function setWarning(msg) {
  const w = $("warning");
  w.hidden = !msg;
  w.textContent = msg || "";
}

// Shows what is used in place of an out-of-range number (an empty box stays empty).
function settle(id, read) {
  if ($(id).value.trim() !== "") $(id).value = String(read());
}

// ---- the grid ----------------------------------------------------------------------------

async function drawGrid() {
  const text = $("text").value, s = seed(), n = count();
  const grid = $("grid");
  grid.dataset.ready = "0";
  setStatus("drawing…");
  const t0 = performance.now();
  let j;
  try {
    j = await api("/api/sample", { text, seed: s, n }, "grid");
  } catch (e) {
    if (!aborted(e)) setStatus(e.message, true);
    return;
  }
  const cells = j.images.map((b64, i) => {
    const fig = document.createElement("figure");
    fig.className = "design";
    fig.dataset.index = String(i);
    const img = document.createElement("img");
    img.src = png(b64);
    img.alt = `design ${i + 1} for “${text}”`;
    img.width = j.size;
    img.height = j.size;
    img.addEventListener("click", () => keep(s, i));
    const a = document.createElement("a");
    a.href = img.src;
    a.download = `design-seed${s}-${i}.png`;
    a.textContent = "PNG";
    a.title = "download this design as PNG";
    fig.append(img, a);
    return fig;
  });
  grid.replaceChildren(...cells);
  grid.dataset.seed = String(s);
  grid.dataset.text = text;
  grid.dataset.ready = "1";
  markKept();
  setWarning(j.warning);
  const secs = (performance.now() - t0) / 1000;
  setStatus(`${n} design${n > 1 ? "s" : ""} of ${j.size} px in ${secs.toFixed(2)} s`);
}

function markKept() {
  const k = state.kept;
  for (const fig of $("grid").children) {
    fig.classList.toggle("kept", !!k && k.seed === seed() && String(k.index) === fig.dataset.index);
  }
}

// ---- the kept design ---------------------------------------------------------------------

function keep(s, index) {
  state.kept = { seed: s, index };
  // Ready for the next words: the same garment, another description.
  $("text").focus({ preventScroll: true });
  markKept();
  drawKept();
  drawWalk();
  updateLink();
}

async function drawKept() {
  const k = state.kept;
  if (!k) return;
  const text = $("text").value;
  let j;
  try {
    j = await api("/api/sample", { text, seed: k.seed, first: k.index, n: 1 }, "kept");
  } catch (e) {
    if (!aborted(e)) $("chosen-caption").textContent = e.message;
    return;
  }
  const img = $("chosen");
  img.src = png(j.images[0]);
  img.hidden = false;
  $("chosen-caption").textContent = `“${text}”, noise ${k.index + 1} of seed ${k.seed}`;
  const a = $("chosen-download");
  a.href = img.src;
  a.download = `design-seed${k.seed}-${k.index}.png`;
  a.hidden = false;
}

// ---- the walk ----------------------------------------------------------------------------

async function drawWalk() {
  const a = $("text").value, b = $("text-b").value, n = steps();
  const noise = state.kept || { seed: seed(), index: 0 };
  const slider = $("walk-slider");
  const at = Number(slider.max) > 0 ? Number(slider.value) / Number(slider.max) : 0;
  slider.dataset.ready = "0";
  let j;
  try {
    j = await api("/api/interpolate", { a, b, seed: noise.seed, index: noise.index, steps: n }, "walk");
  } catch (e) {
    if (!aborted(e)) $("walk-label").textContent = e.message;
    return;
  }
  state.walkFrames = j.images.map(png);
  slider.max = String(n - 1);
  slider.value = String(Math.round(at * (n - 1)));
  slider.dataset.ready = "1";
  showWalkFrame();
}

function showWalkFrame() {
  const slider = $("walk-slider");
  const i = Number(slider.value), last = Number(slider.max);
  if (!state.walkFrames[i]) return;
  $("walk-image").src = state.walkFrames[i];
  $("walk-image").dataset.frame = String(i);
  const pct = last > 0 ? Math.round((100 * i) / last) : 0;
  $("walk-label").textContent = `${pct}% of the way from “${$("text").value}” to “${$("text-b").value}”`;
}

// ---- the link to this view -----------------------------------------------------------------

function updateLink() {
  const q = new URLSearchParams({ text: $("text").value, seed: String(seed()), n: String(count()) });
  if (state.kept) q.set("keep", `${state.kept.seed}:${state.kept.index}`);
  q.set("b", $("text-b").value);
  q.set("steps", String(steps()));
  const url = `${location.pathname}?${q}`;
  history.replaceState(null, "", url);
  $("permalink").href = url;
}

function readLink() {
  const q = new URLSearchParams(location.search);
  if (q.has("text")) $("text").value = q.get("text");
  if (q.has("seed")) $("seed").value = q.get("seed");
  if (q.has("n")) $("n").value = q.get("n");
  if (q.has("b")) $("text-b").value = q.get("b");
  if (q.has("steps")) $("steps").value = q.get("steps");
  const m = /^(\d+):(\d+)$/.exec(q.get("keep") || "");
  if (m) state.kept = { seed: Number(m[1]), index: Number(m[2]) };
}

// ---- the model and its run ---------------------------------------------------------------

function renderInfo(info) {
  state.size = info.size;
  state.maxN = info.limits.max_n;
  state.maxSteps = info.limits.max_steps;
  $("n").max = String(info.limits.max_n);
  $("steps").max = String(info.limits.max_steps);
  $("text").maxLength = info.limits.max_text_chars;
  $("text-b").maxLength = info.limits.max_text_chars;
  const data = info.data ? `trained on ${info.data}` : "trained on the built-in synthetic catalogue";
  $("model").textContent = `${info.file} · iteration ${info.iteration} · ${info.size} px · width ${info.width} · ${info.vocabulary_size} words · ${info.device} · ${data}`;
  $("model").title = info.checkpoint;
  const run = info.run;
  if (!run) return;
  $("run-panel").hidden = false;
  $("run-folder").textContent = `run folder ${run.folder}`;
  const select = $("run-grid-step");
  select.replaceChildren(
    ...run.samples.map((s) => {
      const o = document.createElement("option");
      o.value = s.url;
      o.textContent = String(s.iteration);
      return o;
    })
  );
  $("run-grid-figure").hidden = run.samples.length === 0;
  if (run.samples.length) {
    select.value = run.samples[run.samples.length - 1].url;
    $("run-grid").src = select.value;
  }
  $("run-captions").replaceChildren(
    ...run.captions.map((c) => {
      const li = document.createElement("li");
      li.textContent = c;
      return li;
    })
  );
  if (run.loss_plot) {
    $("run-loss-figure").hidden = false;
    $("run-loss").src = run.loss_plot;
  }
}

// ---- wiring -------------------------------------------------------------------------------

function debounce(f, ms) {
  let t;
  return () => {
    clearTimeout(t);
    t = setTimeout(f, ms);
  };
}

const redrawAll = () => {
  drawGrid();
  drawKept();
  drawWalk();
  updateLink();
};
const redrawAllSoon = debounce(redrawAll, 200);
const redrawWalkSoon = debounce(() => {
  drawWalk();
  updateLink();
}, 200);

async function start() {
  readLink();
  try {
    const [info, vocab] = await Promise.all([api("/api/info"), api("/api/vocabulary")]);
    state.vocab = new Set(vocab.words);
    renderInfo(info);
  } catch (e) {
    $("model").textContent = `cannot reach the server: ${e.message}`;
    return;
  }
  renderWords();
  $("text").addEventListener("input", () => {
    renderWords();
    redrawAllSoon();
  });
  $("n").addEventListener("change", () => {
    settle("n", count); // what is drawn: 1 to the server's limit
    drawGrid();
    updateLink();
  });
  $("seed").addEventListener("change", () => {
    settle("seed", seed);
    drawGrid();
    if (!state.kept) drawWalk();
    updateLink();
  });
  $("more").addEventListener("click", () => {
    $("seed").value = String(Math.floor(Math.random() * 2 ** 32));
    drawGrid();
    if (!state.kept) drawWalk();
    updateLink();
  });
  $("text-b").addEventListener("input", redrawWalkSoon);
  $("steps").addEventListener("change", () => {
    settle("steps", steps);
    redrawWalkSoon();
  });
  $("walk-slider").addEventListener("input", showWalkFrame);
  $("run-grid-step").addEventListener("change", (e) => {
    $("run-grid").src = e.target.value;
  });
  redrawAll();
}

start();
