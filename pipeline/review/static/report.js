// The review page: header and job grid rendered from the run's index (inline in the static
// report.html, fetched from /api/data when served by `pipeline review`) and chunks of jobs
// loaded as a page needs them (script files beside report.html, /api/chunk/... when served).
// Elements are built with textContent only (data never reaches innerHTML); filters and the
// page number live in the URL hash.
//
// Paging: the index counts each chunk's jobs by status group and feature, and names every
// decision with its job's chunk, group and feature; so for these filters the number of matches
// in every chunk is known without loading it, and a page loads only the chunks its cards are in.
// A search reads the chunks in order until the page is full, then goes on reading the rest in
// the background to count the matches. A few chunks are kept; older ones are dropped.
//
// Products: the jobs of one `group` come together in the page's order; each chunk names the
// products its rows belong to with their whole summary (where they start, how many jobs,
// states, checks), so a product cut by a chunk or page boundary still shows as one, and its
// header decides for every job of it. Marketplace checks: each output's verdict per channel
// (a chunk names each distinct verdict once); the index counts jobs by a check token ("" not
// judged, "ok", or the failing channels "amazon,google"), so the check filter counts too.
(() => {
  "use strict";
  const UNFINISHED = new Set(["started", "retrying", "submitted"]);
  const FEATURES = {IMAGE_INPAINTER: "inpaint", BACKGROUND_REPLACER: "background"};
  const NOTES = {missing: "file missing", unreadable: "cannot read image", url: "remote URL",
    asset: "uploaded asset", none: "no image", pending: "not run yet",
    deferred: "preview not made yet (pipeline report makes it)"};
  const PAGE_SIZE = 60;
  const CACHED_CHUNKS = 16;
  const BULK_CONFIRM = 10000;
  const $ = (id) => document.getElementById(id);
  const grid = $("grid"), count = $("count");
  const DECIDABLE = new Set(["succeeded", "partial"]);  // jobs with images to judge
  const state = {status: "all", feature: "all", query: "", decision: "all", rejectedOnly: false,
    check: "all", page: 0};
  let INDEX, COL, storeKey = "", TOTAL = 0;
  const DECIDED = new Map();  // job id -> {decision, note, ts, chunk, group, feature, checks, pick}
  let BY_CHUNK = null;  // chunk -> its decided entries (rebuilt when a decision changes)
  const CHUNKS = new Map();  // chunk number -> Promise of the chunk, oldest first
  const WAITING = new Map();  // chunk number -> {resolve, reject} of its script (static page)
  let counts = [];  // matches in each chunk under the current filters; undefined: not known yet
  let token = 0;  // bumped by every new filter or page: older asynchronous work stops

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
  const number = (n) => n.toLocaleString("en-US");

  // -- chunks -------------------------------------------------------------------------------
  window.reportChunk = (n, data) => {
    const waiting = WAITING.get(n);
    if (waiting) { WAITING.delete(n); waiting.resolve(data); }
  };

  function fetchChunk(n) {
    const url = INDEX.chunk_url.replace("{n}", String(n));
    if (INDEX.live) {
      return fetch(url).then((response) => {
        if (!response.ok) throw new Error("chunk " + n + ": HTTP " + response.status);
        return response.json();
      });
    }
    // file:// pages may not fetch; a script may load, and hands its data to reportChunk.
    return new Promise((resolve, reject) => {
      WAITING.set(n, {resolve, reject});
      const script = document.createElement("script");
      script.src = url;
      script.onload = () => script.remove();
      script.onerror = () => { WAITING.delete(n); script.remove();
        reject(new Error("cannot load " + url)); };
      document.head.append(script);
    });
  }

  function chunk(n) {
    let promise = CHUNKS.get(n);
    if (promise) { CHUNKS.delete(n); CHUNKS.set(n, promise); return promise; }
    promise = fetchChunk(n).then((data) => prepare(n, data));
    promise.catch(() => CHUNKS.delete(n));
    CHUNKS.set(n, promise);
    while (CHUNKS.size > CACHED_CHUNKS) CHUNKS.delete(CHUNKS.keys().next().value);
    return promise;
  }

  // A chunk names its repeated values (status, feature, mask) once in ``tables``: put them back.
  function prepare(n, data) {
    for (const [name, values] of Object.entries(data.tables || {})) {
      const at = COL[name];
      if (at === undefined) continue;
      for (const row of data.rows) if (row[at] !== null) row[at] = values[row[at]];
    }
    return {n, rows: data.rows, sources: data.sources, params: data.params,
      products: data.products || [], verdicts: data.verdicts || [],
      jobs: new Array(data.rows.length), search: null, tokens: null};
  }

  // A job's check token from its outputs' verdicts (each: per channel, a list of failures).
  function tokenOf(verdicts) {
    if (!verdicts.length) return "";
    const failing = INDEX.channels.filter((name, k) => verdicts.some((v) => v[k].length));
    return failing.length ? failing.join(",") : "ok";
  }
  function rowVerdicts(c, row) {
    return (row[COL.checks] || []).map((k) => c.verdicts[k]);
  }
  function tokenAt(c, i) {
    if (!c.tokens) c.tokens = c.rows.map((row) => tokenOf(rowVerdicts(c, row)));
    return c.tokens[i];
  }

  // Rows stay as they came (compact arrays); a row becomes a job object only when drawn.
  function jobOf(c, i) {
    if (c.jobs[i]) return c.jobs[i];
    const row = c.rows[i];
    const job = {chunk: c.n, position: c.n * INDEX.chunk_rows + i};
    INDEX.fields.forEach((name, k) => { job[name] = row[k]; });
    Object.defineProperty(job, "decision", {get: () => {
      const d = DECIDED.get(job.id);
      return d ? [d.decision, d.note, d.ts] : null;
    }});
    Object.defineProperty(job, "pick", {get: () => {
      const d = DECIDED.get(job.id);
      return d && d.decision === "approved" && Number.isInteger(d.pick) ? d.pick : null;
    }});
    const verdicts = rowVerdicts(c, row);
    job.checkToken = tokenAt(c, i);
    job.product = job.product === null || job.product === undefined ? null :
      c.products[job.product];
    // A present output comes as its URL alone (its label is the last part); others as arrays.
    job.outputs = (job.outputs || []).map((o, k) => Object.assign(typeof o === "string" ?
      {label: decodeURIComponent(o.slice(o.lastIndexOf("/") + 1)), full: o, note: null} :
      {label: o[0], full: o[1], note: o[2]}, {verdict: verdicts[k] || null}));
    const source = Object.assign({}, c.sources[job.source] || {note: "none"});
    for (const key of ["thumb", "plain"]) if (source[key]) source[key] = INDEX.thumbs + source[key];
    job.source = source;
    job.params = job.params === null ? {} : c.params[job.params];
    if (job.mask) job.mask = {kind: job.mask[0], label: job.mask[1]};
    c.jobs[i] = job;
    return job;
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
    const h = INDEX.header, states = h.states || {};
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

  // -- filters and pages ---------------------------------------------------------------------
  const groupOk = (g) => state.status === "all" || g === state.status;
  const featureOk = (f) => state.feature === "all" || f === state.feature;
  // The check filter: "fails:amazon", "passes" (every channel), "unchecked", or "all".
  function checkOk(token, filter) {
    const wanted = filter === undefined ? state.check : filter;
    if (wanted === "all") return true;
    if (wanted === "passes") return token === "ok";
    if (wanted === "unchecked") return token === "";
    if (wanted.startsWith("fails:")) return token.split(",").includes(wanted.slice(6));
    return true;
  }
  function decisionOk(decision) {
    if (state.rejectedOnly && decision !== "rejected") return false;
    return state.decision === "all" || (decision || "none") === state.decision;
  }

  function decidedIn(n) {
    if (!BY_CHUNK) {
      BY_CHUNK = new Map();
      for (const d of DECIDED.values()) {
        if (!BY_CHUNK.has(d.chunk)) BY_CHUNK.set(d.chunk, []);
        BY_CHUNK.get(d.chunk).push(d);
      }
    }
    return BY_CHUNK.get(n) || [];
  }

  // The matches in chunk n from the index alone, or null when only its rows can tell (a search).
  function counted(n) {
    if (state.query) return null;
    let total = 0;
    for (const [key, k] of Object.entries(INDEX.chunks[n].counts)) {
      const [groupName, feature, checks] = key.split("|");
      if (groupOk(groupName) && featureOk(feature) && checkOk(checks || "")) total += k;
    }
    if (state.decision === "all" && !state.rejectedOnly) return total;
    let decided = 0, matching = 0;
    for (const d of decidedIn(n)) {
      if (!groupOk(d.group) || !featureOk(d.feature) || !checkOk(d.checks || "")) continue;
      decided++;
      if (decisionOk(d.decision)) matching++;
    }
    return matching + (decisionOk(null) ? total - decided : 0);
  }

  function rowMatches(c, i) {
    const row = c.rows[i];
    if (!groupOk(groupOf(row[COL.status])) || !featureOk(row[COL.feature] || "")) return false;
    if (!checkOk(tokenAt(c, i))) return false;
    const d = DECIDED.get(row[COL.id]);
    if (!decisionOk(d ? d.decision : null)) return false;
    if (state.query) {
      if (!c.search) c.search = c.rows.map((r) => (r[COL.id] + "\n" + (r[COL.prompt] || "")).toLowerCase());
      if (!c.search[i].includes(state.query)) return false;
    }
    return true;
  }

  function matchesIn(c) {
    let found = 0;
    for (let i = 0; i < c.rows.length; i++) if (rowMatches(c, i)) found++;
    return found;
  }

  function known() {
    let total = 0, complete = true;
    for (let n = 0; n < INDEX.chunks.length; n++) {
      if (counts[n] === undefined) {
        const c = counted(n);
        if (c === null) { complete = false; continue; }
        counts[n] = c;
      }
      total += counts[n];
    }
    return {total, complete};
  }

  // The current page: walk the chunks, skip those whose matches all come before the page,
  // load the ones it is in, stop when it is full.
  async function render() {
    const mine = ++token;
    document.body.dataset.busy = "1";  // until this page is drawn (tests wait on it)
    const from = state.page * PAGE_SIZE;
    const picked = [];
    let seen = 0;
    for (let n = 0; n < INDEX.chunks.length && picked.length < PAGE_SIZE; n++) {
      if (counts[n] === undefined) { const c = counted(n); if (c !== null) counts[n] = c; }
      if (counts[n] === 0) continue;
      if (counts[n] !== undefined && seen + counts[n] <= from) { seen += counts[n]; continue; }
      let c;
      try {
        c = await chunk(n);
      } catch (error) {
        if (mine === token) {
          $("live-status").textContent = String(error.message || error);
          delete document.body.dataset.busy;
        }
        return;
      }
      if (mine !== token) return;
      let found = 0;
      for (let i = 0; i < c.rows.length; i++) {
        if (!rowMatches(c, i)) continue;
        if (seen >= from && picked.length < PAGE_SIZE) picked.push(jobOf(c, i));
        seen++;
        found++;
      }
      counts[n] = found;
    }
    const {total, complete} = known();
    if (!picked.length && state.page > 0 && complete) {  // past the end (a narrower filter)
      state.page = Math.max(0, Math.ceil(total / PAGE_SIZE) - 1);
      writeHash();
      return render();
    }
    const batch = document.createDocumentFragment();
    let product = null;
    for (const job of picked) {
      if (job.product && (!product || product.at !== job.product.at)) {
        batch.append(productHeader(job.product, job.position > job.product.at));
      }
      product = job.product;
      batch.append(card(job));
    }
    grid.replaceChildren(batch);
    showCounts();
    delete document.body.dataset.busy;
    if (!complete) scanRest(mine);
  }

  // A search's matches beyond the page: counted chunk by chunk, in the background.
  async function scanRest(mine) {
    for (let n = 0; n < INDEX.chunks.length; n++) {
      if (counts[n] !== undefined) continue;
      const c = counted(n);
      if (c !== null) { counts[n] = c; continue; }
      let data;
      try { data = await chunk(n); } catch (error) { return; }
      if (mine !== token) return;
      counts[n] = matchesIn(data);
      showCounts();
    }
  }

  function showCounts() {
    const {total, complete} = known();
    const from = state.page * PAGE_SIZE, shown = grid.querySelectorAll("article.card").length;
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    const filtered = state.status !== "all" || state.feature !== "all" || state.query ||
      state.decision !== "all" || state.rejectedOnly || state.check !== "all";
    const of = number(total) + (complete ? "" : "+");
    const what = filtered ? " matching (" + number(TOTAL) + " jobs)" : " jobs";
    count.textContent = (shown ? "showing " + number(from + 1) + "–" + number(from + shown) :
      "showing 0") + " of " + of + what + (complete ? "" : ", searching…");
    $("page-label").textContent = "page " + number(state.page + 1) + " of " + number(pages) +
      (complete ? "" : "+");
    $("prev").disabled = state.page === 0;
    $("next").disabled = complete && from + PAGE_SIZE >= total;
    $("pager").hidden = complete && total <= PAGE_SIZE;
    $("empty").hidden = !(complete && total === 0);
  }

  function apply() {
    state.page = 0;
    counts = [];
    syncControls();
    writeHash();
    return render();
  }

  function turn(delta) {
    state.page = Math.max(0, state.page + delta);
    writeHash();
    window.scrollTo(0, 0);
    return render();
  }

  function syncControls() {
    for (const button of document.querySelectorAll("#status button")) {
      button.setAttribute("aria-pressed", String(button.dataset.status === state.status));
    }
    $("feature").value = state.feature;
    $("query").value = state.query;
    $("decision").value = state.decision;
    $("check").value = state.check;
    $("rejected-only").checked = state.rejectedOnly;
  }

  // The hash holds the filters and the page: "#failed", "#status=failed&q=chair&page=3".
  function readHash() {
    Object.assign(state, {status: "all", feature: "all", query: "", decision: "all",
      rejectedOnly: false, check: "all", page: 0});
    const params = new URLSearchParams(location.hash.slice(1));
    for (const [key, value] of params) {
      if (["failed", "succeeded", "unfinished", "pending", "all"].includes(key) && !value) {
        state.status = key;
      } else if (key === "rejected" && !value) state.rejectedOnly = true;
      else if (key === "status") state.status = value;
      else if (key === "feature") state.feature = value;
      else if (key === "q") state.query = value.toLowerCase();
      else if (key === "decision") state.decision = value;
      else if (key === "check") state.check = value;
      else if (key === "rejected") state.rejectedOnly = value === "1";
      else if (key === "page") state.page = Math.max(0, (parseInt(value, 10) || 1) - 1);
    }
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (state.status !== "all") params.set("status", state.status);
    if (state.feature !== "all") params.set("feature", state.feature);
    if (state.query) params.set("q", state.query);
    if (state.decision !== "all") params.set("decision", state.decision);
    if (state.check !== "all") params.set("check", state.check);
    if (state.rejectedOnly) params.set("rejected", "1");
    if (state.page > 0) params.set("page", String(state.page + 1));
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
      const node = figure({thumb: output.full, full: output.full, note: output.note},
        "output " + (index + 1), output.label, gallery, job);
      decorateOutput(node, job, output, index);
      outputs.append(node);
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

  // An output's check badges (a failure's reasons on hover), its pick mark, and on the served
  // page a button to pick it among a job's images.
  function decorateOutput(node, job, output, index) {
    node.dataset.index = String(index);
    if (output.verdict) node.append(badges(output.verdict));
    if (job.pick === index) {
      node.classList.add("picked");
      node.append(el("span", "pick-mark", "★ picked"));
    } else if (INDEX.live && job.status === "succeeded" && job.outputs.length > 1) {
      const button = el("button", "pick", "pick");
      button.type = "button";
      button.title = "deliver this image as the job's image";
      button.addEventListener("click", () => pick(job, index));
      node.append(button);
    }
  }

  function badges(verdict) {
    const wrap = el("div", "badges");
    INDEX.channels.forEach((name, k) => {
      const failures = verdict[k] || [];
      const badge = el("span", "badge " + (failures.length ? "fail" : "pass"),
        (failures.length ? "✕ " : "✓ ") + name);
      badge.dataset.channel = name;
      badge.title = name + ": " + (failures.length ?
        failures.map((failure) => failure[1]).join("; ") : "passes");
      wrap.append(badge);
    });
    return wrap;
  }

  // -- products -----------------------------------------------------------------------------
  function productHeader(product, continued) {
    const head = el("section", "product-head");
    head.dataset.product = product.name;
    const title = el("div", "product-title");
    title.append(el("h2", "product-name", product.name),
      el("span", "product-count", number(product.n) + (product.n === 1 ? " job" : " jobs") +
        (continued ? " · continued" : "")));
    const states = Object.entries(product.states || {}).sort()
      .map(([status, k]) => number(k) + " " + status).join(" · ");
    title.append(el("span", "product-states", states));
    head.append(title);
    const checks = el("div", "product-checks");
    for (const name of INDEX.channels) {
      const tally = product.checks && product.checks[name];
      if (!tally) continue;
      const [passed, judged] = tally;
      const chip = el("span", "badge " + (passed === judged ? "pass" : "fail"),
        name + " " + passed + "/" + judged + " pass");
      chip.dataset.channel = name;
      checks.append(chip);
    }
    if (checks.childElementCount) head.append(checks);
    const decided = el("span", "product-decided");
    const buttons = el("span", "decide product-decide");
    for (const [decision, cls, label] of [["approved", "approve", "approve product"],
      ["rejected", "reject", "reject product"]]) {
      const button = el("button", cls, label);
      button.type = "button";
      button.dataset.decision = decision;
      button.addEventListener("click", () => decideProduct(product, decision));
      buttons.append(button);
    }
    head.append(decided, buttons);
    paintProduct(product, head);
    return head;
  }

  // Every job of a product: the chunks holding its positions (one, or two at a boundary).
  async function membersOf(product) {
    const size = INDEX.chunk_rows, jobs = [];
    const first = Math.floor(product.at / size);
    const last = Math.floor((product.at + product.n - 1) / size);
    for (let n = first; n <= last && n < INDEX.chunks.length; n++) {
      const c = await chunk(n);
      for (let i = 0; i < c.rows.length; i++) {
        const position = n * size + i;
        if (position >= product.at && position < product.at + product.n) jobs.push(jobOf(c, i));
      }
    }
    return jobs;
  }

  async function paintProduct(product, head) {
    let members;
    try { members = await membersOf(product); } catch (error) { return; }
    const decidable = members.filter((job) => DECIDABLE.has(job.status));
    const tally = {approved: 0, rejected: 0};
    for (const job of members) if (decisionOf(job)) tally[decisionOf(job)]++;
    const parts = [];
    if (tally.approved) parts.push(tally.approved + " approved");
    if (tally.rejected) parts.push(tally.rejected + " rejected");
    head.querySelector(".product-decided").textContent =
      (parts.join(" · ") || "undecided") + " · " + decidable.length + " to judge";
    for (const button of head.querySelectorAll(".product-decide button")) {
      const all = decidable.length > 0 &&
        decidable.every((job) => decisionOf(job) === button.dataset.decision);
      button.setAttribute("aria-pressed", String(all));
      button.disabled = decidable.length === 0;
    }
    head.classList.toggle("approved", tally.approved > 0 && tally.approved === decidable.length);
    head.classList.toggle("rejected", tally.rejected > 0 && tally.rejected === decidable.length);
  }

  // A product's header decides for each of its jobs that has images of its current content
  // (the server checks that again); on the static page the same toggle as a job's buttons.
  // Busy from the click on: finding the members may load chunks before anything is drawn.
  async function decideProduct(product, decision) {
    document.body.dataset.busy = "1";
    try {
      const members = await membersOf(product);
      const targets = members.filter((job) => DECIDABLE.has(job.status));
      if (!targets.length) {
        $("live-status").textContent = product.name + ": no job with images to decide";
        return;
      }
      const same = targets.every((job) => decisionOf(job) === decision);
      await decide(targets, same && !INDEX.live ? null : decision, product.name);
      await render();
    } finally {
      delete document.body.dataset.busy;
    }
  }

  async function pick(job, index) {
    const note = $("note").value.trim();
    $("live-status").textContent = "saving…";
    const response = await fetch("api/decisions", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({decisions: [{job_id: job.id, decision: "picked", index, note}]})});
    if (!response.ok) {
      $("live-status").textContent = "not saved: " + (await response.text());
      return;
    }
    const saved = await response.json();
    $("live-status").textContent = "saved " + saved.recorded;
    setDecision(job, "approved", note, "saved", index);
    if (state.decision !== "all" || state.rejectedOnly) counts = [];
    syncDecided();
    const article = grid.querySelector('article.card[data-job-id="' + CSS.escape(job.id) + '"]');
    if (article) article.replaceWith(card(job));
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
  // for `pipeline review OUT --from FILE`. Every decision is kept by job id with the job's
  // chunk, group and feature, so the filters count them without loading their chunks.
  // A pick is an approval naming the image; a later approval keeps it, a rejection drops it.
  function setDecision(job, decision, note, ts, pickIndex) {
    if (decision) {
      const before = DECIDED.get(job.id);
      const kept = pickIndex !== undefined ? pickIndex :
        decision === "approved" && before && before.decision === "approved" ? before.pick : null;
      DECIDED.set(job.id, {decision, note, ts, chunk: job.chunk, group: group(job),
        feature: job.feature || "", checks: job.checkToken || "", pick: kept});
    } else {
      DECIDED.delete(job.id);
    }
    BY_CHUNK = null;
  }

  function loadLocal() {
    if (INDEX.live) return;
    try {
      const saved = JSON.parse(localStorage.getItem(storeKey) || "{}");
      for (const [id, entry] of Object.entries(saved)) {
        if (!Array.isArray(entry) || !["approved", "rejected"].includes(entry[0])) continue;
        const [decision, chunkNumber, groupName, feature, checks] = entry;
        DECIDED.set(id, {decision, note: "", ts: "", chunk: chunkNumber, group: groupName,
          feature, checks: checks || "", pick: null});
      }
    } catch (error) { /* private mode or mangled storage: start from the recorded ones */ }
  }

  function saveLocal() {
    if (INDEX.live) return;
    const saved = {};
    for (const [id, d] of DECIDED) {
      if (d.ts === "") saved[id] = [d.decision, d.chunk, d.group, d.feature, d.checks];
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
        const next = decisionOf(job) === decision && !INDEX.live ? null : decision;
        decide([job], next).then(() => paintCard(job, article));
      });
      wrap.append(button);
    }
    return wrap;
  }

  // ``product``: a product header's decision (the server leaves out jobs it cannot decide).
  async function decide(jobs, decision, product) {
    const note = $("note").value.trim();
    if (INDEX.live && decision) {
      $("live-status").textContent = "saving…";
      const body = {decisions: jobs.map((job) => ({job_id: job.id, decision, note}))};
      if (product !== undefined) body.product = product;
      const response = await fetch("api/decisions", {method: "POST",
        headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
      if (!response.ok) {
        $("live-status").textContent = "not saved: " + (await response.text());
        return;
      }
      const saved = await response.json();
      const skipped = new Set(saved.skipped || []);
      jobs = jobs.filter((job) => !skipped.has(job.id));
      $("live-status").textContent = "saved " + saved.recorded;
    }
    for (const job of jobs) setDecision(job, decision, note, INDEX.live ? "saved" : "");
    if (state.decision !== "all" || state.rejectedOnly) counts = [];  // they filter on these
    saveLocal();
    syncDecided();
  }

  // Every job the filters match, on every page: the chunks holding them are read in turn.
  async function allMatching() {
    const jobs = [];
    for (let n = 0; n < INDEX.chunks.length; n++) {
      const c = counts[n] !== undefined ? counts[n] : counted(n);
      if (c === 0) continue;
      const data = await chunk(n);
      for (let i = 0; i < data.rows.length; i++) if (rowMatches(data, i)) jobs.push(jobOf(data, i));
    }
    return jobs;
  }

  async function bulk(decision) {
    const {total, complete} = known();
    if (complete && total > BULK_CONFIRM &&
        !window.confirm(decision + ": all " + number(total) + " matching jobs?")) return;
    const targets = await allMatching();
    if (!targets.length) return;
    await decide(targets, decision);
    for (const article of grid.querySelectorAll("article.card")) {
      const job = targets.find((t) => t.id === article.dataset.jobId);
      if (job) paintCard(job, article);
    }
  }

  function idsWith(decision) {
    const ids = [];
    for (const [id, d] of DECIDED) if (d.decision === decision) ids.push(id);
    return ids;
  }

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
    const groups = {all: 0, failed: 0, unfinished: 0, succeeded: 0, pending: 0};
    for (const meta of INDEX.chunks) {
      for (const [key, k] of Object.entries(meta.counts)) {
        const name = key.slice(0, key.indexOf("|"));
        groups[name] = (groups[name] || 0) + k;
        groups.all += k;
      }
    }
    TOTAL = groups.all;
    for (const button of document.querySelectorAll("#status button")) {
      button.textContent += " " + number(groups[button.dataset.status] || 0);
      button.addEventListener("click", () => { state.status = button.dataset.status; apply(); });
    }
    for (const feature of INDEX.features || []) {
      const option = el("option", null, FEATURES[feature] || feature);
      option.value = feature;
      $("feature").append(option);
    }
    $("feature").addEventListener("change", (e) => { state.feature = e.target.value; apply(); });
    const checkTotals = {};
    for (const meta of INDEX.chunks) {
      for (const [key, k] of Object.entries(meta.counts)) {
        const token = key.split("|")[2] || "";
        checkTotals[token] = (checkTotals[token] || 0) + k;
      }
    }
    const checkFilters = [...(INDEX.channels || []).map((name) => ["fails:" + name, "fails " + name]),
      ["passes", "passes all"], ["unchecked", "not checked"]];
    for (const [value, label] of checkFilters) {
      let total = 0;
      for (const [token, k] of Object.entries(checkTotals)) if (checkOk(token, value)) total += k;
      const option = el("option", null, label + " " + number(total));
      option.value = value;
      $("check").append(option);
    }
    $("check").addEventListener("change", (e) => { state.check = e.target.value; apply(); });
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
    $("prev").addEventListener("click", () => turn(-1));
    $("next").addEventListener("click", () => turn(1));
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
    window.addEventListener("hashchange", () => {
      readHash(); counts = []; syncControls(); render(); });
  }

  async function load() {
    const inline = $("report-data");
    performance.mark("script");
    INDEX = inline ? JSON.parse(inline.textContent) : await (await fetch("api/data")).json();
    performance.mark("parsed");
    COL = Object.fromEntries(INDEX.fields.map((name, i) => [name, i]));
    for (const [id, d] of Object.entries(INDEX.decisions || {})) {
      DECIDED.set(id, {decision: d[0], note: d[1], ts: d[2], chunk: d[3], group: d[4],
        feature: d[5], checks: d[6] || "", pick: Number.isInteger(d[7]) ? d[7] : null});
    }
    storeKey = "pipeline-report:decisions:" + INDEX.run_key;
    if (!INDEX.live) $("live-status").textContent = "read-only: decisions are exported as JSON";
    loadLocal();
    renderHeader();
    wire();
    readHash();
    syncControls();
    await render();
    syncDecided();
    performance.mark("ready");
    document.body.dataset.ready = "1";
  }
  load();
})();
