"""The review page's shell, style and script, kept apart from the data work in ``report.py``.

Everything is inline so the page is one file that works from ``file://`` with no network. The
script renders job cards from the embedded JSON a page at a time (10,000 cards at once would be a
slow page), builds every element with ``textContent`` (data never reaches ``innerHTML``), and keeps
the filters in the URL hash so ``report.html#failed`` opens on the failed jobs.
"""

from __future__ import annotations

import html

STYLE = """
:root {
  --bg: #f4f5f7; --card: #fff; --ink: #1d2330; --muted: #667085; --line: #e3e6eb;
  --ok: #16a34a; --ok-soft: #dcfce7; --bad: #dc2626; --bad-soft: #fee2e2;
  --warn: #d97706; --warn-soft: #fef3c7; --accent: #2563eb; --thumb: 120px;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--ink); background: var(--bg);
}
* { box-sizing: border-box; }
body { margin: 0; font-size: 14px; line-height: 1.45; }
button, input, select { font: inherit; color: inherit; }
.run { padding: 20px 28px 8px; background: var(--card); border-bottom: 1px solid var(--line); }
.title { display: flex; align-items: baseline; gap: 14px; flex-wrap: wrap; }
h1 { margin: 0; font-size: 22px; letter-spacing: -0.01em; }
.subtitle { margin: 0; color: var(--muted); }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0 10px; }
.tile { flex: 1 1 112px; display: flex; flex-direction: column; min-width: 0; padding: 10px 14px;
  border: 1px solid var(--line); border-radius: 10px; background: #fbfcfd; }
.tile-label { font-size: 11px; text-transform: uppercase; letter-spacing: .06em;
  color: var(--muted); }
.tile-value { font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; }
.tile-detail { font-size: 12px; color: var(--muted); overflow-wrap: anywhere; }
.tile.ok .tile-value { color: var(--ok); }
.tile.bad .tile-value { color: var(--bad); }
.tile.warn .tile-value { color: var(--warn); }
.chart-tile { flex: 2.4 1 250px; }
.chart { display: block; width: 100%; height: 56px; margin: 4px 0 2px; }
.chart .axis { stroke: var(--line); stroke-width: 1; vector-effect: non-scaling-stroke; }
.chart .ok { fill: none; stroke: var(--ok); stroke-width: 2; stroke-linejoin: round;
  vector-effect: non-scaling-stroke; }
.chart .ok-area { fill: var(--ok-soft); }
.chart .bad { fill: none; stroke: var(--bad); stroke-width: 2; stroke-linejoin: round;
  vector-effect: non-scaling-stroke; }
.chart-axis { display: flex; justify-content: space-between; font-size: 11px; color: var(--muted); }
.chart-empty { color: var(--muted); margin: 8px 0; }
.notice { margin: 6px 0; padding: 6px 10px; border-radius: 8px; background: var(--warn-soft);
  color: #7c4a03; font-size: 13px; }
.notice.stop { background: var(--bad-soft); color: #8a1c1c; }
.toolbar { position: sticky; top: 0; z-index: 5; display: flex; flex-wrap: wrap; gap: 10px;
  align-items: center; padding: 10px 28px; background: rgba(244,245,247,.94);
  backdrop-filter: blur(6px); border-bottom: 1px solid var(--line); }
.segmented { display: inline-flex; border: 1px solid var(--line); border-radius: 8px;
  overflow: hidden; background: var(--card); }
.segmented button { border: 0; background: none; padding: 5px 12px; cursor: pointer; }
.segmented button + button { border-left: 1px solid var(--line); }
.segmented button[aria-pressed="true"] { background: var(--ink); color: #fff; }
.toolbar select, .toolbar input[type="search"] { padding: 5px 9px; border: 1px solid var(--line);
  border-radius: 8px; background: var(--card); }
.toolbar input[type="search"] { width: 220px; }
.toolbar label { display: inline-flex; gap: 6px; align-items: center; cursor: pointer; }
.count { color: var(--muted); margin-left: auto; }
.btn { border: 1px solid var(--line); background: var(--card); border-radius: 8px;
  padding: 5px 12px; cursor: pointer; }
.btn:hover { border-color: #c5cad3; }
.btn.primary { background: var(--ink); color: #fff; border-color: var(--ink); }
.btn:disabled { opacity: .45; cursor: default; }
.rejected-bar { display: none; gap: 10px; align-items: center; padding: 10px 28px;
  background: var(--bad-soft); border-bottom: 1px solid #f5c2c2; }
.rejected-bar.open { display: flex; flex-wrap: wrap; }
.rejected-bar textarea { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  width: 320px; min-height: 54px; border: 1px solid #f0b4b4; border-radius: 8px; padding: 6px; }
main { padding: 18px 28px 40px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(430px, 1fr)); gap: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  border-left: 4px solid var(--ok); padding: 14px; display: flex; flex-direction: column;
  gap: 10px; box-shadow: 0 1px 2px rgba(16,24,40,.04); }
.card[data-status="failed"] { border-left-color: var(--bad); }
.card.unfinished { border-left-color: var(--warn); }
.card.rejected { background: #fffafa; }
.card.rejected .outputs img { opacity: .45; filter: grayscale(.6); }
.card-head { display: flex; align-items: center; gap: 8px; }
.job-id { margin: 0; font: 600 14px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  overflow-wrap: anywhere; flex: 1; }
.chip { font-size: 11px; padding: 2px 8px; border-radius: 999px; background: #eef1f5;
  color: #475467; white-space: nowrap; }
.chip.succeeded { background: var(--ok-soft); color: #166534; }
.chip.failed { background: var(--bad-soft); color: #991b1b; }
.chip.unfinished { background: var(--warn-soft); color: #92400e; }
.reject { border: 1px solid var(--line); background: var(--card); border-radius: 999px;
  padding: 2px 10px; font-size: 12px; cursor: pointer; white-space: nowrap; }
.reject[aria-pressed="true"] { background: var(--bad); border-color: var(--bad); color: #fff; }
.images { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
.outputs { display: contents; }
.arrow { align-self: center; width: 12px; color: #98a2b3; font-size: 16px; margin-top: -18px; }
figure { margin: 0; width: var(--thumb); }
.frame { position: relative; display: block; width: var(--thumb); height: var(--thumb);
  padding: 0; border: 1px solid var(--line); border-radius: 8px; overflow: hidden; cursor: zoom-in;
  background: repeating-conic-gradient(#eef0f3 0% 25%, #fff 0% 50%) 50% / 16px 16px; }
.frame img { width: 100%; height: 100%; object-fit: contain; display: block; }
.frame:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
.mask-toggle { position: absolute; left: 6px; bottom: 6px; font-size: 10px; padding: 1px 7px;
  border-radius: 999px; border: 0; background: rgba(220,38,38,.9); color: #fff; cursor: pointer; }
.mask-toggle[aria-pressed="false"] { background: rgba(29,35,48,.75); }
figcaption { font-size: 11px; color: var(--muted); margin-top: 3px; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }
.placeholder { width: var(--thumb); height: var(--thumb); border: 1px dashed #cfd4dc;
  border-radius: 8px; display: flex; align-items: center; justify-content: center;
  text-align: center; padding: 8px; color: var(--muted); font-size: 12px; background: #fafbfc; }
.prompt { margin: 0; font-size: 14px; color: #2b3342; overflow-wrap: anywhere;
  display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden;
  cursor: pointer; }
.prompt.open { -webkit-line-clamp: unset; }
.params { display: flex; flex-wrap: wrap; gap: 6px; margin: 0; padding: 0; list-style: none; }
.params li { font-size: 12px; background: #f2f4f7; border-radius: 6px; padding: 1px 7px;
  color: #475467; overflow-wrap: anywhere; }
.params b { font-weight: 500; color: var(--muted); }
.error { margin: 0; padding: 8px 10px; border-radius: 8px; background: var(--bad-soft);
  color: #7f1d1d; font-size: 13px; overflow-wrap: anywhere; }
.error strong { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.meta { font-size: 12px; color: var(--muted); }
.more-wrap { display: flex; justify-content: center; margin-top: 18px; }
.empty { color: var(--muted); text-align: center; padding: 40px; }
.lightbox { position: fixed; inset: 0; z-index: 20; display: none; flex-direction: column;
  align-items: center; justify-content: center; gap: 10px; background: rgba(10,12,18,.88); }
.lightbox.open { display: flex; }
.lightbox img { max-width: 92vw; max-height: 82vh; object-fit: contain; border-radius: 6px;
  background: repeating-conic-gradient(#e5e7eb 0% 25%, #fff 0% 50%) 50% / 20px 20px; }
.lightbox .caption { color: #e5e7eb; font-size: 13px; }
.lightbox .caption a { color: #93c5fd; }
.lightbox .nav { position: absolute; top: 50%; transform: translateY(-50%); font-size: 28px;
  background: rgba(255,255,255,.12); color: #fff; border: 0; border-radius: 999px;
  width: 48px; height: 48px; cursor: pointer; }
.lightbox .prev { left: 18px; } .lightbox .next { right: 18px; }
.lightbox .close { position: absolute; top: 14px; right: 18px; font-size: 22px; background: none;
  border: 0; color: #fff; cursor: pointer; }
"""

SCRIPT = r"""
(() => {
  "use strict";
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const JOBS = DATA.jobs;
  const PAGE_SIZE = 60;
  const UNFINISHED = new Set(["started", "retrying", "submitted"]);
  const FEATURES = {IMAGE_INPAINTER: "inpaint", BACKGROUND_REPLACER: "background"};
  const NOTES = {missing: "file missing", unreadable: "cannot read image", url: "remote URL",
    asset: "uploaded asset", none: "no image"};
  const STORE_KEY = "pipeline-report:rejected:" + DATA.run_key;
  const $ = (id) => document.getElementById(id);
  const grid = $("grid"), more = $("more"), count = $("count");
  const state = {status: "all", feature: "all", query: "", rejectedOnly: false};
  let matches = [], shown = 0;
  const rejected = loadRejected();

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  const group = (job) => UNFINISHED.has(job.status) ? "unfinished" : job.status;

  // -- filters ------------------------------------------------------------------------------
  function matchesFilters(job) {
    if (state.status !== "all" && group(job) !== state.status) return false;
    if (state.feature !== "all" && job.feature !== state.feature) return false;
    if (state.rejectedOnly && !rejected.has(job.id)) return false;
    if (state.query) {
      const text = (job.id + "\n" + job.prompt).toLowerCase();
      if (!text.includes(state.query)) return false;
    }
    return true;
  }

  function apply() {
    matches = JOBS.filter(matchesFilters);
    shown = 0;
    grid.replaceChildren();
    renderMore();
    syncControls();
    writeHash();
  }

  function renderMore() {
    const end = Math.min(shown + PAGE_SIZE, matches.length);
    const batch = document.createDocumentFragment();
    for (let i = shown; i < end; i++) batch.append(card(matches[i]));
    grid.append(batch);
    shown = end;
    more.hidden = shown >= matches.length;
    $("empty").hidden = matches.length > 0;
    count.textContent = "showing " + shown.toLocaleString() + " of " +
      matches.length.toLocaleString() + (matches.length === JOBS.length ? " jobs" :
      " matching (" + JOBS.length.toLocaleString() + " jobs)");
  }

  function syncControls() {
    for (const button of document.querySelectorAll("#status button")) {
      button.setAttribute("aria-pressed", String(button.dataset.status === state.status));
    }
    $("feature").value = state.feature;
    $("query").value = state.query;
    $("rejected-only").checked = state.rejectedOnly;
  }

  // The hash holds the filters: "#failed", "#status=failed&feature=IMAGE_INPAINTER&q=chair".
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const [key, value] of params) {
      if (["failed", "succeeded", "unfinished", "all"].includes(key) && !value) state.status = key;
      else if (key === "rejected" && !value) state.rejectedOnly = true;
      else if (key === "status") state.status = value;
      else if (key === "feature") state.feature = value;
      else if (key === "q") state.query = value.toLowerCase();
      else if (key === "rejected") state.rejectedOnly = value === "1";
    }
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (state.status !== "all") params.set("status", state.status);
    if (state.feature !== "all") params.set("feature", state.feature);
    if (state.query) params.set("q", state.query);
    if (state.rejectedOnly) params.set("rejected", "1");
    const hash = params.toString();
    try {
      history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
    } catch (error) { /* some file:// setups refuse; the filters still work */ }
  }

  // -- cards --------------------------------------------------------------------------------
  function card(job) {
    const article = el("article", "card");
    article.dataset.jobId = job.id;
    article.dataset.status = job.status;
    if (group(job) === "unfinished") article.classList.add("unfinished");
    if (rejected.has(job.id)) article.classList.add("rejected");

    const head = el("div", "card-head");
    head.append(el("h2", "job-id", job.id));
    if (job.feature) head.append(el("span", "chip", FEATURES[job.feature] || job.feature));
    head.append(el("span", "chip " + group(job), group(job)));
    head.append(rejectButton(job, article));
    article.append(head, images(job));

    if (job.prompt) {
      const prompt = el("p", "prompt", job.prompt);
      prompt.title = "click to expand";
      prompt.addEventListener("click", () => prompt.classList.toggle("open"));
      article.append(prompt);
    }
    const params = el("ul", "params");
    for (const [key, value] of Object.entries(job.params || {})) {
      const item = el("li");
      const text = value !== null && typeof value === "object" ? JSON.stringify(value) : value;
      item.append(el("b", null, key + " "), document.createTextNode(String(text)));
      params.append(item);
    }
    if (job.mask) {
      const item = el("li");
      item.append(el("b", null, "mask "), document.createTextNode(job.mask.label || job.mask.kind));
      params.append(item);
    }
    if (params.childElementCount) article.append(params);
    if (job.status === "failed") article.append(errorBox(job));
    const meta = metaLine(job);
    if (meta) article.append(el("div", "meta", meta));
    return article;
  }

  function images(job) {
    const row = el("div", "images");
    const gallery = [];
    const source = job.source || {note: "none"};
    row.append(figure(source, "source", source.label, gallery, job, true));
    row.append(el("span", "arrow", "→"));
    const outputs = el("div", "outputs");
    if (job.outputs.length === 0) {
      const text = job.status === "failed" ? "no output" :
        job.status === "succeeded" ? "no output" : "not finished";
      const figureNode = el("figure");
      figureNode.append(el("div", "placeholder", text));
      outputs.append(figureNode);
    }
    job.outputs.forEach((output, index) => {
      outputs.append(figure(output, "output " + (index + 1), output.label, gallery, job));
    });
    row.append(outputs);
    return row;
  }

  function figure(image, caption, fileName, gallery, job, isSource) {
    const node = el("figure");
    if (!image.thumb) {
      node.append(el("div", "placeholder", NOTES[image.note] || "no preview"));
      const label = el("figcaption", null, caption);
      if (fileName) label.title = fileName;
      node.append(label);
      return node;
    }
    const position = gallery.length;
    gallery.push({src: image.full || image.thumb,
      caption: job.id + " — " + caption + (fileName ? " (" + fileName + ")" : ""),
      link: image.full || null});
    const frame = el("button", "frame");
    frame.type = "button";
    frame.title = "enlarge";
    const img = el("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = caption;
    img.src = image.thumb;
    img.addEventListener("error", () => frame.replaceWith(el("div", "placeholder", "no preview")));
    frame.append(img);
    frame.addEventListener("click", () => openLightbox(gallery, position));
    if (isSource && image.plain) {
      // The thumbnail shows the mask as a red tint; the toggle swaps in the plain source.
      const toggle = el("button", "mask-toggle", "mask");
      toggle.type = "button";
      toggle.setAttribute("aria-pressed", "true");
      toggle.title = "red: the area the mask lets the model edit";
      toggle.addEventListener("click", (event) => {
        event.stopPropagation();
        const on = toggle.getAttribute("aria-pressed") !== "true";
        toggle.setAttribute("aria-pressed", String(on));
        img.src = on ? image.thumb : image.plain;
      });
      frame.append(toggle);
    }
    const label = el("figcaption", null, caption);
    if (fileName) label.title = fileName;
    node.append(frame, label);
    return node;
  }

  function errorBox(job) {
    const error = job.error || {};
    const box = el("p", "error");
    box.append(el("strong", null, error.kind || "error"));
    if (error.http_status) box.append(document.createTextNode(" · HTTP " + error.http_status));
    if (error.message) box.append(document.createTextNode(" — " + error.message));
    return box;
  }

  function metaLine(job) {
    const parts = [];
    if (job.attempts) parts.push(job.attempts + (job.attempts === 1 ? " attempt" : " attempts"));
    const retries = Object.entries(job.retries || {});
    if (retries.length) {
      const total = retries.reduce((sum, [, n]) => sum + n, 0);
      parts.push(total + (total === 1 ? " retry (" : " retries (") +
        retries.map(([kind, n]) => kind + " ×" + n).join(", ") + ")");
    }
    if (job.credits !== null && job.credits !== undefined) parts.push(job.credits + " credits");
    const time = /T(\d\d:\d\d:\d\d)/.exec(job.updated || "");
    if (time) parts.push("at " + time[1] + " UTC");
    return parts.join(" · ");
  }

  // -- rejections ---------------------------------------------------------------------------
  function loadRejected() {
    try {
      const saved = JSON.parse(localStorage.getItem(STORE_KEY) || "[]");
      const known = new Set(JOBS.map((job) => job.id));
      return new Set(saved.filter((id) => known.has(id)));
    } catch (error) {
      return new Set();
    }
  }

  function saveRejected() {
    try { localStorage.setItem(STORE_KEY, JSON.stringify([...rejected])); } catch (error) { }
  }

  function rejectButton(job, article) {
    const button = el("button", "reject");
    button.type = "button";
    const paint = () => {
      const on = rejected.has(job.id);
      button.setAttribute("aria-pressed", String(on));
      button.textContent = on ? "✕ rejected" : "reject";
      article.classList.toggle("rejected", on);
    };
    button.addEventListener("click", () => {
      if (rejected.has(job.id)) rejected.delete(job.id); else rejected.add(job.id);
      paint();
      saveRejected();
      syncRejected();
    });
    paint();
    return button;
  }

  function rejectedIds() {
    return JOBS.filter((job) => rejected.has(job.id)).map((job) => job.id);
  }

  function syncRejected() {
    const ids = rejectedIds();
    $("rejected-count").textContent = String(ids.length);
    $("export").disabled = ids.length === 0;
    $("show-list").disabled = ids.length === 0;
    $("rejected-list").value = ids.join("\n");
    if (ids.length === 0) $("rejected-bar").classList.remove("open");
  }

  function downloadRejected() {
    const body = JSON.stringify({rejected: rejectedIds()}, null, 2) + "\n";
    const url = URL.createObjectURL(new Blob([body], {type: "application/json"}));
    const link = el("a");
    link.href = url;
    link.download = "rejected.json";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function copyList() {
    const area = $("rejected-list");
    area.select();
    const done = () => { $("copy").textContent = "copied"; setTimeout(() => {
      $("copy").textContent = "copy"; }, 1200); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(area.value).then(done, () => {
        document.execCommand("copy"); done(); });
    } else {
      document.execCommand("copy");
      done();
    }
  }

  // -- lightbox -----------------------------------------------------------------------------
  const box = {node: $("lightbox"), gallery: [], index: 0};
  function openLightbox(gallery, index) {
    box.gallery = gallery;
    box.index = index;
    showLightbox();
    box.node.classList.add("open");
    $("lightbox-close").focus();
  }
  function showLightbox() {
    const item = box.gallery[box.index];
    $("lightbox-img").src = item.src;
    $("lightbox-img").alt = item.caption;
    const caption = $("lightbox-caption");
    caption.replaceChildren(document.createTextNode((box.index + 1) + " / " +
      box.gallery.length + " · " + item.caption + "  "));
    if (item.link) {
      const link = el("a", null, "open file");
      link.href = item.link;
      link.target = "_blank";
      caption.append(link);
    } else {
      caption.append(document.createTextNode("(preview)"));
    }
    const single = box.gallery.length < 2;
    $("lightbox-prev").hidden = single;
    $("lightbox-next").hidden = single;
  }
  function step(delta) {
    box.index = (box.index + delta + box.gallery.length) % box.gallery.length;
    showLightbox();
  }
  function closeLightbox() {
    box.node.classList.remove("open");
    $("lightbox-img").removeAttribute("src");
  }

  // -- wiring -------------------------------------------------------------------------------
  function wire() {
    const counts = {all: JOBS.length, failed: 0, unfinished: 0, succeeded: 0};
    const features = new Set();
    for (const job of JOBS) {
      counts[group(job)] = (counts[group(job)] || 0) + 1;
      if (job.feature) features.add(job.feature);
    }
    for (const button of document.querySelectorAll("#status button")) {
      button.textContent += " " + (counts[button.dataset.status] || 0).toLocaleString();
      button.addEventListener("click", () => { state.status = button.dataset.status; apply(); });
    }
    for (const feature of [...features].sort()) {
      const option = el("option", null, FEATURES[feature] || feature);
      option.value = feature;
      $("feature").append(option);
    }
    $("feature").addEventListener("change", (e) => { state.feature = e.target.value; apply(); });
    let typing = 0;
    $("query").addEventListener("input", (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        state.query = e.target.value.trim().toLowerCase();
        apply();
      }, 150);
    });
    $("rejected-only").addEventListener("change", (e) => {
      state.rejectedOnly = e.target.checked; apply(); });
    more.addEventListener("click", renderMore);
    $("export").addEventListener("click", downloadRejected);
    $("show-list").addEventListener("click", () => $("rejected-bar").classList.toggle("open"));
    $("copy").addEventListener("click", copyList);
    $("lightbox-close").addEventListener("click", closeLightbox);
    $("lightbox-prev").addEventListener("click", () => step(-1));
    $("lightbox-next").addEventListener("click", () => step(1));
    box.node.addEventListener("click", (e) => { if (e.target === box.node) closeLightbox(); });
    document.addEventListener("keydown", (e) => {
      if (!box.node.classList.contains("open")) return;
      if (e.key === "Escape") closeLightbox();
      else if (e.key === "ArrowLeft") step(-1);
      else if (e.key === "ArrowRight") step(1);
    });
    // Render the next page before the reader reaches the end of the current one.
    if ("IntersectionObserver" in window) {
      new IntersectionObserver((entries) => {
        if (entries.some((entry) => entry.isIntersecting) && !more.hidden) renderMore();
      }, {rootMargin: "800px"}).observe(more);
    }
    window.addEventListener("hashchange", () => { readHash(); apply(); });
  }

  wire();
  readHash();
  apply();
  syncRejected();
})();
"""

BODY = """
<nav class="toolbar" aria-label="filters">
  <div class="segmented" id="status" role="group" aria-label="status">
    <button type="button" data-status="all">All</button>
    <button type="button" data-status="failed">Failed</button>
    <button type="button" data-status="unfinished">Unfinished</button>
    <button type="button" data-status="succeeded">Succeeded</button>
  </div>
  <select id="feature" aria-label="feature"><option value="all">all features</option></select>
  <input id="query" type="search" placeholder="search id or prompt" aria-label="search">
  <label><input id="rejected-only" type="checkbox"> rejected only</label>
  <span class="count" id="count"></span>
  <span>rejected: <b id="rejected-count">0</b></span>
  <button class="btn" type="button" id="show-list" disabled>list</button>
  <button class="btn primary" type="button" id="export" disabled>export JSON</button>
</nav>
<div class="rejected-bar" id="rejected-bar">
  <span>Rejected job ids, one per line, to run again:</span>
  <textarea id="rejected-list" readonly aria-label="rejected job ids"></textarea>
  <button class="btn" type="button" id="copy">copy</button>
</div>
<main>
  <div class="grid" id="grid"></div>
  <p class="empty" id="empty" hidden>No job matches these filters.</p>
  <div class="more-wrap"><button class="btn" type="button" id="more" hidden>show more</button></div>
</main>
<div class="lightbox" id="lightbox" role="dialog" aria-modal="true" aria-label="image">
  <button class="close" type="button" id="lightbox-close" aria-label="close">✕</button>
  <button class="nav prev" type="button" id="lightbox-prev" aria-label="previous">‹</button>
  <img id="lightbox-img" alt="">
  <button class="nav next" type="button" id="lightbox-next" aria-label="next">›</button>
  <div class="caption" id="lightbox-caption"></div>
</div>
<noscript><p class="empty">The job grid needs JavaScript.</p></noscript>
"""


def render_page(title: str, header: str, data: str) -> str:
    """The whole document. `header` is trusted HTML (built escaped); `data` is script-safe JSON."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No network at all: images come from the folder (file: for browsers that give every
        # local file its own origin), styles and script are inline, nothing else may load.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src 'self' file: data: blob:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"{header}{BODY}"
        f'<script type="application/json" id="report-data">{data}</script>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )
