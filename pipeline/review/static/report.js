// The review page: header and job grid rendered from one JSON payload (inline in the static
// report.html, fetched from /api/data when served by `pipeline review`). Elements are built with
// textContent only (data never reaches innerHTML); filters live in the URL hash.
(() => {
  "use strict";
  const UNFINISHED = new Set(["started", "retrying", "submitted"]);
  const FEATURES = {IMAGE_INPAINTER: "inpaint", BACKGROUND_REPLACER: "background"};
  const NOTES = {missing: "file missing", unreadable: "cannot read image", url: "remote URL",
    asset: "uploaded asset", none: "no image", pending: "not run yet"};
  const PAGE_SIZE = 60;
  const $ = (id) => document.getElementById(id);
  const grid = $("grid"), more = $("more"), count = $("count");
  const state = {status: "all", feature: "all", query: "", decision: "all", rejectedOnly: false};
  // Rows stay as they came (compact arrays); a row becomes a job object only when drawn.
  let DATA, ROWS, COL, CACHE, SEARCH = null, BY_ID = null, matches = [], shown = 0, storeKey = "";

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  // A partial job (paid images missing) needs a person, as a failed one does: listed with them.
  const groupOf = (status) =>
    UNFINISHED.has(status) ? "unfinished" : status === "partial" ? "failed" : status;
  const group = (job) => groupOf(job.status);
  const decisionOf = (job) => job.decision ? job.decision[0] : null;
  const rowDecision = (row) => row[COL.decision] ? row[COL.decision][0] : null;

  function jobAt(index) {
    if (CACHE[index]) return CACHE[index];
    const row = ROWS[index];
    const job = {index};
    DATA.fields.forEach((name, i) => { if (name !== "decision") job[name] = row[i]; });
    // The decision lives in the row, so filters (which read rows) see every change.
    Object.defineProperty(job, "decision", {get: () => row[COL.decision],
      set: (value) => { row[COL.decision] = value; }});
    // A present output comes as its URL alone (its label is the last part); others as arrays.
    job.outputs = (job.outputs || []).map((o) => typeof o === "string" ?
      {label: decodeURIComponent(o.slice(o.lastIndexOf("/") + 1)), full: o, note: null} :
      {label: o[0], full: o[1], note: o[2]});
    const source = Object.assign({}, DATA.sources[job.source] || {note: "none"});
    for (const key of ["thumb", "plain"]) if (source[key]) source[key] = DATA.thumbs + source[key];
    job.source = source;
    job.params = job.params === null ? {} : DATA.params[job.params];
    if (job.mask) job.mask = {kind: job.mask[0], label: job.mask[1]};
    CACHE[index] = job;
    return job;
  }

  function indexOf(id) {
    if (!BY_ID) BY_ID = new Map(ROWS.map((row, i) => [row[COL.id], i]));
    return BY_ID.get(id);
  }

  // -- header -------------------------------------------------------------------------------
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    let minutes = Math.floor(Math.round(seconds) / 60);
    const secs = Math.round(seconds) % 60;
    if (minutes < 60) return minutes + " min " + String(secs).padStart(2, "0") + " s";
    const hours = Math.floor(minutes / 60);
    minutes %= 60;
    return hours + " h " + String(minutes).padStart(2, "0") + " min";
  }
  function when(ts) {
    const moment = ts ? new Date(ts) : null;
    if (!moment || isNaN(moment)) return "—";
    return moment.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }
  const maybe = (v) => v === null || v === undefined ? "—" :
    (Number.isInteger(v) ? v.toLocaleString("en-US") :
      v.toLocaleString("en-US", {maximumFractionDigits: 1}));

  function tile(label, value, detail, tone) {
    const node = el("div", "tile " + (tone || ""));
    node.append(el("span", "tile-label", label), el("span", "tile-value", value),
      el("span", "tile-detail", detail));
    return node;
  }

  function chart(series) {
    const wrap = el("div", "tile chart-tile");
    wrap.append(el("span", "tile-label", "Progress"));
    if (!series) { wrap.append(el("p", "chart-empty", "no finished jobs yet")); return wrap; }
    const W = 320, H = 96, P = 4, NS = "http://www.w3.org/2000/svg";
    const top = Math.max(series.ok[series.ok.length - 1], series.failed[series.failed.length - 1], 1);
    const points = (line) => line.map((v, i) => (P + i * (W - 2 * P) / (line.length - 1)).toFixed(1)
      + "," + (H - P - (H - 2 * P) * v / top).toFixed(1)).join(" ");
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "jobs finished over time");
    const ok = series.ok[series.ok.length - 1], bad = series.failed[series.failed.length - 1];
    const add = (tag, attrs) => { const n = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); svg.append(n); return n; };
    add("title", {}).textContent = ok + " succeeded, " + bad + " failed over " + duration(series.span);
    add("line", {class: "axis", x1: P, y1: H - P, x2: W - P, y2: H - P});
    add("polygon", {class: "ok-area", points: P + "," + (H - P) + " " + points(series.ok) + " " +
      (W - P) + "," + (H - P)});
    add("polyline", {class: "ok", points: points(series.ok)});
    add("polyline", {class: "bad", points: points(series.failed)});
    const axis = el("div", "chart-axis");
    axis.append(el("span", null, "0"), el("span", null, ok + " ok · " + bad + " failed"),
      el("span", null, duration(series.span)));
    wrap.append(svg, axis);
    return wrap;
  }

  function renderHeader() {
    const h = DATA.header, states = h.states || {};
    const total = Object.values(states).reduce((a, b) => a + b, 0);
    const reasons = Object.entries(h.retry_reasons || {}).sort();
    const retries = reasons.reduce((sum, [, n]) => sum + n, 0);
    const failed = states.failed || 0;
    const title = el("div", "title");
    title.append(el("h1", null, h.title));
    const sub = [h.manifest, when(h.started_at), duration(h.duration),
      h.exit_code !== null && h.exit_code !== undefined ? "exit " + h.exit_code : ""];
    title.append(el("p", "subtitle", sub.filter(Boolean).join(" · ")));
    const tiles = el("div", "tiles");
    const decided = h.decisions || {};
    tiles.append(
      tile("Succeeded", (states.succeeded || 0).toLocaleString("en-US"),
        "of " + total.toLocaleString("en-US") + " jobs", "ok"),
      tile("Failed", failed.toLocaleString("en-US"), failed ? "listed first below" : "none",
        failed ? "bad" : ""),
      tile("Unfinished", h.unfinished.toLocaleString("en-US"), "resume to finish",
        h.unfinished ? "warn" : ""),
      tile("Pending", (h.pending || 0).toLocaleString("en-US"), "not run yet", ""),
      tile("Skipped", maybe(h.skipped), "already done", ""),
      tile("Retries", retries.toLocaleString("en-US"),
        reasons.map(([k, n]) => k + " " + n).join(", ") || "none", ""),
      tile("Credits", maybe(h.credits), h.account ? "account: " + h.account : "estimated", ""),
      tile("Throughput", maybe(h.jobs_per_minute),
        "jobs/min · " + maybe(h.images_per_minute) + " images/min", ""),
      tile("Reviewed", ((decided.approved || 0) + (decided.rejected || 0)).toLocaleString("en-US"),
        (decided.approved || 0) + " approved · " + (decided.rejected || 0) + " rejected", ""),
      chart(h.chart));
    const header = $("run-header");
    header.replaceChildren(title, tiles);
    if (h.stopped) header.append(el("p", "notice stop", "Stopped: " + h.stopped));
    for (const note of h.notes || []) header.append(el("p", "notice", note));
  }

  // -- filters ------------------------------------------------------------------------------
  function matchesFilters(row, index) {
    if (state.status !== "all" && groupOf(row[COL.status]) !== state.status) return false;
    if (state.feature !== "all" && row[COL.feature] !== state.feature) return false;
    const decision = rowDecision(row);
    if (state.rejectedOnly && decision !== "rejected") return false;
    if (state.decision !== "all" && (decision || "none") !== state.decision) return false;
    if (state.query) {
      if (!SEARCH) SEARCH = ROWS.map((r) => (r[COL.id] + "\n" + (r[COL.prompt] || "")).toLowerCase());
      if (!SEARCH[index].includes(state.query)) return false;
    }
    return true;
  }

  function apply() {
    matches = [];
    for (let i = 0; i < ROWS.length; i++) if (matchesFilters(ROWS[i], i)) matches.push(i);
    shown = 0;
    grid.replaceChildren();
    renderMore();
    syncControls();
    writeHash();
  }

  // Only what is near the viewport is built: a page of cards at a time, more as one scrolls.
  function renderMore() {
    const end = Math.min(shown + PAGE_SIZE, matches.length);
    const batch = document.createDocumentFragment();
    for (let i = shown; i < end; i++) batch.append(card(jobAt(matches[i])));
    grid.append(batch);
    shown = end;
    more.hidden = shown >= matches.length;
    $("empty").hidden = matches.length > 0;
    count.textContent = "showing " + shown.toLocaleString("en-US") + " of " +
      matches.length.toLocaleString("en-US") + (matches.length === ROWS.length ? " jobs" :
      " matching (" + ROWS.length.toLocaleString("en-US") + " jobs)");
  }

  function syncControls() {
    for (const button of document.querySelectorAll("#status button")) {
      button.setAttribute("aria-pressed", String(button.dataset.status === state.status));
    }
    $("feature").value = state.feature;
    $("query").value = state.query;
    $("decision").value = state.decision;
    $("rejected-only").checked = state.rejectedOnly;
  }

  // The hash holds the filters: "#failed", "#status=failed&feature=IMAGE_INPAINTER&q=chair".
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const [key, value] of params) {
      if (["failed", "succeeded", "unfinished", "pending", "all"].includes(key) && !value) {
        state.status = key;
      } else if (key === "rejected" && !value) state.rejectedOnly = true;
      else if (key === "status") state.status = value;
      else if (key === "feature") state.feature = value;
      else if (key === "q") state.query = value.toLowerCase();
      else if (key === "decision") state.decision = value;
      else if (key === "rejected") state.rejectedOnly = value === "1";
    }
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (state.status !== "all") params.set("status", state.status);
    if (state.feature !== "all") params.set("feature", state.feature);
    if (state.query) params.set("q", state.query);
    if (state.decision !== "all") params.set("decision", state.decision);
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
    if (group(job) === "unfinished" || job.status === "pending") {
      article.classList.add("unfinished");
    }
    const head = el("div", "card-head");
    head.append(el("h2", "job-id", job.id));
    if (job.feature) head.append(el("span", "chip", FEATURES[job.feature] || job.feature));
    head.append(el("span", "chip " + group(job), group(job)));
    head.append(decideButtons(job, article));
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
    if (job.status === "failed" || job.status === "partial") article.append(errorBox(job));
    if (job.decision && job.decision[1]) {
      article.append(el("div", "decision-note", job.decision[0] + ": " + job.decision[1]));
    }
    const meta = metaLine(job);
    if (meta) article.append(el("div", "meta", meta));
    paintCard(job, article);
    return article;
  }

  function images(job) {
    const row = el("div", "images");
    const gallery = [];
    row.append(figure(job.source, "source", job.source.label, gallery, job, true));
    row.append(el("span", "arrow", "→"));
    const outputs = el("div", "outputs");
    if (job.outputs.length === 0) {
      const text = job.status === "failed" || job.status === "succeeded" ? "no output" :
        job.status === "pending" ? "not run yet" : "not finished";
      const node = el("figure");
      node.append(el("div", "placeholder", text));
      outputs.append(node);
    }
    job.outputs.forEach((output, index) => {
      outputs.append(figure({thumb: output.full, full: output.full, note: output.note},
        "output " + (index + 1), output.label, gallery, job));
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
    img.width = 120;
    img.height = 120;
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

  // -- decisions ----------------------------------------------------------------------------
  // Served: a click is POSTed to /api/decisions and lands in OUT/reviews.jsonl. Static: the
  // file shows the recorded decisions; new ones are kept in this browser and exported as JSON
  // for `pipeline review OUT --from FILE`.
  function loadLocal() {
    if (DATA.live) return;
    try {
      const saved = JSON.parse(localStorage.getItem(storeKey) || "{}");
      for (const [id, decision] of Object.entries(saved)) {
        const index = indexOf(id);
        if (index !== undefined && ["approved", "rejected"].includes(decision)) {
          ROWS[index][COL.decision] = [decision, "", ""];
        }
      }
    } catch (error) { /* private mode or mangled storage: start from the recorded ones */ }
  }

  function saveLocal() {
    if (DATA.live) return;
    const saved = {};
    for (const row of ROWS) {
      const decision = row[COL.decision];
      if (decision && decision[2] === "") saved[row[COL.id]] = decision[0];
    }
    try { localStorage.setItem(storeKey, JSON.stringify(saved)); } catch (error) { }
  }

  function paintCard(job, article) {
    const decision = decisionOf(job);
    article.classList.toggle("rejected", decision === "rejected");
    article.classList.toggle("approved", decision === "approved");
    for (const button of article.querySelectorAll(".decide button")) {
      const on = button.dataset.decision === decision;
      button.setAttribute("aria-pressed", String(on));
      if (button.dataset.decision === "rejected") button.textContent = on ? "✕ rejected" : "reject";
      else button.textContent = on ? "✓ approved" : "approve";
    }
  }

  function decideButtons(job, article) {
    const wrap = el("span", "decide");
    for (const [decision, cls] of [["approved", "approve"], ["rejected", "reject"]]) {
      const button = el("button", cls);
      button.type = "button";
      button.dataset.decision = decision;
      button.addEventListener("click", () => {
        const next = decisionOf(job) === decision && !DATA.live ? null : decision;
        decide([job], next).then(() => paintCard(job, article));
      });
      wrap.append(button);
    }
    return wrap;
  }

  async function decide(jobs, decision) {
    const note = $("note").value.trim();
    if (DATA.live && decision) {
      $("live-status").textContent = "saving…";
      const response = await fetch("api/decisions", {method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({decisions: jobs.map((job) => ({job_id: job.id, key: job.key,
          decision, note}))})});
      if (!response.ok) {
        $("live-status").textContent = "not saved: " + (await response.text());
        return;
      }
      const saved = await response.json();
      $("live-status").textContent = "saved " + saved.recorded;
    }
    for (const job of jobs) job.decision = decision ? [decision, note, DATA.live ? "saved" : ""] : null;
    saveLocal();
    syncDecided();
  }

  function bulk(decision) {
    const targets = matches.map(jobAt);
    if (!targets.length) return;
    decide(targets, decision).then(() => {
      for (const article of grid.querySelectorAll("article.card")) {
        paintCard(jobAt(indexOf(article.dataset.jobId)), article);
      }
    });
  }

  const idsWith = (decision) => ROWS.filter((row) => rowDecision(row) === decision)
    .map((row) => row[COL.id]);

  function syncDecided() {
    const ids = idsWith("rejected");
    $("rejected-count").textContent = String(ids.length);
    $("export").disabled = ids.length === 0 && idsWith("approved").length === 0;
    $("show-list").disabled = ids.length === 0;
    $("rejected-list").value = ids.join("\n");
    if (ids.length === 0) $("rejected-bar").classList.remove("open");
  }

  function downloadDecisions() {
    const body = JSON.stringify({rejected: idsWith("rejected"), approved: idsWith("approved"),
      note: $("note").value.trim()}, null, 2) + "\n";
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
    const counts = {all: ROWS.length, failed: 0, unfinished: 0, succeeded: 0, pending: 0};
    const features = new Set();
    for (const row of ROWS) {
      const name = groupOf(row[COL.status]);
      counts[name] = (counts[name] || 0) + 1;
      if (row[COL.feature]) features.add(row[COL.feature]);
    }
    for (const button of document.querySelectorAll("#status button")) {
      button.textContent += " " + (counts[button.dataset.status] || 0).toLocaleString("en-US");
      button.addEventListener("click", () => { state.status = button.dataset.status; apply(); });
    }
    for (const feature of [...features].sort()) {
      const option = el("option", null, FEATURES[feature] || feature);
      option.value = feature;
      $("feature").append(option);
    }
    $("feature").addEventListener("change", (e) => { state.feature = e.target.value; apply(); });
    $("decision").addEventListener("change", (e) => { state.decision = e.target.value; apply(); });
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
    $("approve-shown").addEventListener("click", () => bulk("approved"));
    $("reject-shown").addEventListener("click", () => bulk("rejected"));
    more.addEventListener("click", renderMore);
    $("export").addEventListener("click", downloadDecisions);
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
    if ("IntersectionObserver" in window) {
      new IntersectionObserver((entries) => {
        if (entries.some((entry) => entry.isIntersecting) && !more.hidden) renderMore();
      }, {rootMargin: "800px"}).observe(more);
    }
    window.addEventListener("hashchange", () => { readHash(); apply(); });
  }

  // Repeated values (status, feature, mask) come once in DATA.tables, rows holding an index:
  // put the values back (shared strings, one pass per column; a few ms for 100,000 rows).
  function untable() {
    for (const [name, values] of Object.entries(DATA.tables || {})) {
      const at = COL[name];
      if (at === undefined) continue;
      for (const row of ROWS) if (row[at] !== null) row[at] = values[row[at]];
    }
  }

  async function load() {
    const inline = $("report-data");
    performance.mark("script");
    DATA = inline ? JSON.parse(inline.textContent) : await (await fetch("api/data")).json();
    performance.mark("parsed");
    ROWS = DATA.jobs;
    COL = Object.fromEntries(DATA.fields.map((name, i) => [name, i]));
    untable();
    CACHE = new Array(ROWS.length);
    storeKey = "pipeline-report:decisions:" + DATA.run_key;
    if (!DATA.live) $("live-status").textContent = "read-only: decisions are exported as JSON";
    loadLocal();
    renderHeader();
    wire();
    readHash();
    apply();
    syncDecided();
    performance.mark("ready");
    document.body.dataset.ready = "1";
  }
  load();
})();
