// replicate review: a keyboard-first page over the review API. No build step.
"use strict";

const params = new URLSearchParams(location.search);
const TOKEN = params.get("token") || "";
const state = {
  config: null,
  view: "label",
  stage: "select",
  reviewer: "",
  filters: { class: "", keyword: "", status: "" },
  page: null,            // null: open at the first pending item
  data: null,
  cursor: 0,
  writes: Promise.resolve(),
  perPage: Number(params.get("per_page") || 100),
};

const $ = (id) => document.getElementById(id);

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

async function api(path, options = {}) {
  const headers = Object.assign({ "X-Review-Token": TOKEN }, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  const isJson = (resp.headers.get("Content-Type") || "").includes("json");
  const body = isJson ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const msg = isJson && body.error ? body.error : `HTTP ${resp.status}`;
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return body;
}

function post(path, payload) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
}

// ------------------------------------------------------------------ location hash

function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  state.view = h.get("view") === "pair" ? "pair" : "label";
  state.filters.class = h.get("class") || "";
  state.filters.keyword = h.get("keyword") || "";
  state.filters.status = h.get("status") || "";
  state.page = h.has("page") ? Number(h.get("page")) : null;
}

function writeHash() {
  const h = new URLSearchParams();
  h.set("view", state.view);
  for (const [k, v] of Object.entries(state.filters)) if (v) h.set(k, v);
  if (state.page !== null) h.set("page", String(state.page));
  history.replaceState(null, "", `${location.pathname}${location.search}#${h.toString()}`);
}

// ------------------------------------------------------------------ setup

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  select.appendChild(o);
}

async function init() {
  if (!TOKEN) {
    showMessage("This page needs the session token: open the URL that `replicate review` printed.");
    return;
  }
  readHash();
  const cfg = await api("/api/config");
  state.config = cfg;
  state.stage = params.get("stage") || cfg.stage;
  state.reviewer = params.get("reviewer") || localStorage.getItem("replicate-review-reviewer") || cfg.reviewer || "";
  $("reviewer").value = state.reviewer;
  for (const s of cfg.stages) option($("stage"), s, s);
  $("stage").value = state.stage;
  cfg.class_names.forEach((c, i) => option($("f-class"), c, i < 10 ? `${i} ${c}` : c));
  for (const [k, n] of Object.entries(cfg.keywords)) if (k) option($("f-keyword"), k, `${k} (${n})`);
  $("f-class").value = state.filters.class;
  $("f-keyword").value = state.filters.keyword;
  if (!cfg.n_pairs) $("tab-pair").disabled = true;
  for (const c of cfg.class_names) option($("class-list"), c, c);
  $("relabel-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("relabel-input").value.trim();
    const index = state.config.class_names.indexOf(name);
    if (index < 0) { showMessage(`class == '${name}'; must be one of the class names.`); return; }
    closeRelabel();
    const it = state.data && state.data.items[state.cursor];
    if (it && it.label === index) decide("accept"); else decide("relabel", index);
  });
  $("relabel-input").addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeRelabel(); });
  const classes = cfg.class_names.slice(0, 10).map((c, i) => `${i}=${c}`).join(", ");
  $("help-text").textContent =
    "Labels: a accept, r reject, d duplicate, x unusable, digits relabel (" + classes + "), " +
    "c relabel to any class by name, u undo. Pairs: d duplicate, s distinct, u undo. Arrows or h/j/k/l move, n/p next/previous page.";

  $("reviewer").addEventListener("change", () => {
    state.reviewer = $("reviewer").value.trim();
    localStorage.setItem("replicate-review-reviewer", state.reviewer);
    load();
  });
  $("stage").addEventListener("change", () => { state.stage = $("stage").value; state.page = null; load(); });
  for (const id of ["f-class", "f-keyword", "f-status"]) {
    $(id).addEventListener("change", () => {
      state.filters[id.slice(2)] = $(id).value;
      state.page = null;
      state.cursor = 0;
      load();
    });
  }
  $("prev").addEventListener("click", () => turn(-1));
  $("next").addEventListener("click", () => turn(1));
  $("help-toggle").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
  for (const b of document.querySelectorAll(".tab")) {
    b.addEventListener("click", () => { state.view = b.dataset.view; state.page = null; state.cursor = 0; load(); });
  }
  document.addEventListener("keydown", onKey);
  await load();
}

function fillStatusFilter() {
  const sel = $("f-status");
  const statuses = state.view === "pair" ? state.config.pair_statuses : state.config.label_statuses;
  const keep = state.filters.status;
  sel.textContent = "";
  option(sel, "", "all");
  for (const s of statuses) option(sel, s, s);
  state.filters.status = statuses.includes(keep) ? keep : "";
  sel.value = state.filters.status;
}

// ------------------------------------------------------------------ loading

async function load(keepCursor = false) {
  fillStatusFilter();
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.view === state.view);
  for (const el of document.querySelectorAll(".label-only")) el.classList.toggle("hidden", state.view === "pair");
  const q = new URLSearchParams({ stage: state.stage });
  if (state.page !== null) q.set("page", String(state.page));
  if (state.view === "label") {
    q.set("per_page", String(state.perPage));
    if (state.filters.class) q.set("class", state.filters.class);
    if (state.filters.keyword) q.set("keyword", state.filters.keyword);
  }
  if (state.filters.status) q.set("status", state.filters.status);
  try {
    const data = await api(`/api/${state.view === "pair" ? "pairs" : "labels"}?${q}`);
    state.data = data;
    state.page = data.page;
    if (!keepCursor) {
      const first = data.items.findIndex((it) => it.status === "pending");
      state.cursor = first >= 0 ? first : 0;
    }
    state.cursor = Math.max(0, Math.min(state.cursor, data.items.length - 1));
    writeHash();
    render();
    showMessage("");
    refreshProgress();
  } catch (err) {
    showMessage(err.message);
  }
}

async function refreshProgress(progress) {
  const p = progress || await api(`/api/progress?stage=${encodeURIComponent(state.stage)}`);
  const part = p[state.view];
  const pct = part.total ? (100 * part.decided) / part.total : 0;
  $("bar-fill").style.width = `${pct}%`;
  $("progress-text").textContent = `${part.decided} / ${part.total} reviewed (${pct.toFixed(1)}%)`;
}

function turn(delta) {
  if (!state.data) return;
  const next = state.data.page + delta;
  if (next < 0 || next >= state.data.pages) return;
  state.page = next;
  state.cursor = delta > 0 ? 0 : state.perPage - 1;
  load(true);
}

// ------------------------------------------------------------------ rendering

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function statusLine(it) {
  const d = it.decision;
  let text = it.status;
  if (d && d.verdict === "relabel") text += ` \u2192 ${d.class_name}`;
  if (d) text += ` \u00b7 ${d.reviewer}`;
  return text;
}

function render() {
  const grid = $("grid");
  grid.textContent = "";
  grid.classList.toggle("pairs", state.view === "pair");
  const d = state.data;
  $("page-text").textContent = `page ${d.page + 1} / ${d.pages} \u00b7 ${d.total} items`;
  d.items.forEach((it, i) => {
    const card = el("div", `card s-${it.status}`);
    card.dataset.index = String(i);
    if (state.view === "label") {
      card.dataset.id = it.id;
      const img = el("img");
      img.alt = it.id;
      img.src = it.src;
      card.append(img, el("div", "cls", it.class_name || "(unlabelled)"), el("div", "kw", it.keyword || "\u00a0"));
      if (it.select) card.append(el("div", "meta", `selected by ${it.select.reviewer}`));
    } else {
      card.classList.add("pair");
      card.dataset.id = `${it.query_id}|${it.reference_set}|${it.reference_id}`;
      const imgs = el("div", "imgs");
      for (const [src, alt] of [[it.query_src, it.query_id], [it.reference_src, it.reference_id]]) {
        const img = el("img");
        img.alt = alt;
        if (src) img.src = src;
        imgs.append(img);
      }
      const table = el("table", "dist");
      for (const [k, v] of Object.entries(it.distances)) {
        const tr = el("tr");
        tr.append(el("td", "", k), el("td", "", v === null ? "n/a" : Number(v).toPrecision(4)));
        table.append(tr);
      }
      for (const [k, v] of Object.entries(it.notes || {})) {
        if (!v) continue;
        const tr = el("tr");
        tr.append(el("td", "", k), el("td", "", v));
        table.append(tr);
      }
      const ids = el("div", "meta", `${it.query_id} \u2194 ${it.reference_id}`);
      ids.title = `reference set: ${it.reference_set}`;
      card.append(imgs, ids, table);
      if (it.select) card.append(el("div", "meta", `select: ${it.select.verdict} \u00b7 ${it.select.reviewer}`));
    }
    card.append(el("div", `status s-${it.status}`, statusLine(it)));
    card.addEventListener("click", () => { state.cursor = i; paintCursor(); });
    grid.append(card);
  });
  paintCursor();
}

function paintCursor() {
  const cards = $("grid").children;
  for (let i = 0; i < cards.length; i++) cards[i].classList.toggle("cursor", i === state.cursor);
  const c = cards[state.cursor];
  if (c) c.scrollIntoView({ block: "nearest" });
}

function updateCard(i, it) {
  state.data.items[i] = it;
  const card = $("grid").children[i];
  if (!card) return;
  card.className = `card s-${it.status}${state.view === "pair" ? " pair" : ""}${i === state.cursor ? " cursor" : ""}`;
  const line = card.querySelector(".status");
  line.className = `status s-${it.status}`;
  line.textContent = statusLine(it);
}

// ------------------------------------------------------------------ decisions

function requireReviewer() {
  if (state.reviewer) return true;
  showMessage("Enter your reviewer name first (top right).");
  $("reviewer").focus();
  return false;
}

function itemPayload(it) {
  if (state.view === "label") return { kind: "label", item: it.id };
  return { kind: "pair", item: it.query_id, ref_set: it.reference_set, ref_id: it.reference_id };
}

function decide(verdict, label) {
  if (!state.data || !state.data.items.length || !requireReviewer()) return;
  const i = state.cursor;
  const it = state.data.items[i];
  const payload = Object.assign(itemPayload(it), { stage: state.stage, reviewer: state.reviewer, verdict });
  if (label !== undefined) payload.label = label;
  // optimistic display; writes go out one at a time, in order
  const before = it;
  updateCard(i, Object.assign({}, it, {
    status: verdict,
    decision: { verdict, reviewer: state.reviewer, class_name: label !== undefined ? state.config.class_names[label] : it.class_name },
  }));
  $("saved").textContent = "saving\u2026";
  state.writes = state.writes.then(() => post("/api/decide", payload)).then((res) => {
    $("saved").textContent = `saved #${res.event.seq}`;
    refreshProgress(res.progress);
  }).catch((err) => {
    updateCard(i, before);
    $("saved").textContent = "not saved";
    showMessage(err.message);
  });
  if (state.cursor < state.data.items.length - 1) {
    state.cursor += 1;
    paintCursor();
  }
}

function undo() {
  if (!requireReviewer()) return;
  const payload = { kind: state.view, stage: state.stage, reviewer: state.reviewer };
  $("saved").textContent = "undoing\u2026";
  state.writes = state.writes.then(() => post("/api/undo", payload)).then((res) => {
    $("saved").textContent = `undone #${res.event.undoes}`;
    const idx = state.data.items.findIndex((it) =>
      state.view === "label" ? it.id === res.event.item
        : it.query_id === res.event.item && it.reference_set === res.event.ref_set && it.reference_id === res.event.ref_id);
    if (idx >= 0) state.cursor = idx;
    return load(true);
  }).catch((err) => {
    $("saved").textContent = "";
    showMessage(err.message);
  });
}

function openRelabel() {
  if (state.view !== "label" || !state.data || !state.data.items.length) return;
  $("relabel-form").hidden = false;
  $("relabel-input").value = "";
  $("relabel-input").focus();
}

function closeRelabel() {
  $("relabel-form").hidden = true;
  $("grid").focus();
}

function move(delta) {
  if (!state.data) return;
  const n = state.data.items.length;
  const next = state.cursor + delta;
  if (next >= n) return turn(1);
  if (next < 0) return turn(-1);
  state.cursor = next;
  paintCursor();
}

function columns() {
  const cards = $("grid").children;
  if (cards.length < 2) return 1;
  const top = cards[0].offsetTop;
  let k = 0;
  while (k < cards.length && cards[k].offsetTop === top) k++;
  return Math.max(1, k);
}

function onKey(ev) {
  if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) {
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); undo(); }
    return;
  }
  const key = ev.key;
  const verdicts = state.config.keys[state.view];
  if (verdicts[key]) { ev.preventDefault(); decide(verdicts[key]); return; }
  if (state.view === "label" && /^[0-9]$/.test(key) && Number(key) < state.config.class_names.length) {
    ev.preventDefault();
    const it = state.data && state.data.items[state.cursor];
    if (it && it.label === Number(key)) decide("accept");
    else decide("relabel", Number(key));
    return;
  }
  const moves = { ArrowRight: 1, l: 1, ArrowLeft: -1, h: -1 };
  if (key in moves) { ev.preventDefault(); move(moves[key]); return; }
  if (key === "ArrowDown" || key === "j") { ev.preventDefault(); move(columns()); return; }
  if (key === "ArrowUp" || key === "k") { ev.preventDefault(); move(-columns()); return; }
  if (key === "u" || key === "Backspace") { ev.preventDefault(); undo(); return; }
  if (key === "n" || key === "PageDown") { ev.preventDefault(); turn(1); return; }
  if (key === "p" || key === "PageUp") { ev.preventDefault(); turn(-1); return; }
  if (key === "c") { ev.preventDefault(); openRelabel(); return; }
  if (key === "?") { $("help").hidden = !$("help").hidden; }
}

document.addEventListener("DOMContentLoaded", () => { init().catch((err) => showMessage(err.message)); });
