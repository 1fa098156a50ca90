// acufarm dashboard: plain JavaScript served by the coordinator (no build step, no CDN). Pages are
// hash routes; data comes from /api/v1 with the session cookie, live updates from /api/v1/events.
"use strict";

const STATES = ["queued", "leased", "succeeded", "failed", "cancelled"];
const live = { runs: new Map(), shards: new Map(), workers: null, rates: new Map(), source: null, watching: null };
let session = null;
let view = null; // { name, args, refresh(kind) }

// ---------------------------------------------------------------------------------------------
// Helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  for (const child of children.flat()) if (child) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

function main() { return document.getElementById("main"); }
function show(...nodes) { main().replaceChildren(...nodes); }
function fmt(n, digits = 0) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits }); }
function duration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.round(s);
  const hours = Math.floor(s / 3600), minutes = Math.floor((s % 3600) / 60), seconds = s % 60;
  return hours ? `${hours} h ${minutes} min` : minutes ? `${minutes} min ${seconds} s` : `${seconds} s`;
}
function when(text) { return text ? new Date(text).toLocaleString() : "–"; }
function pill(state) { return h("span", { class: `pill s-${state}` }, state); }
function done(counts) { return counts.succeeded + counts.failed + counts.cancelled; }
function enc(text) { return encodeURIComponent(text); }

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, options = {}) {
  const init = { method: options.method || "GET", headers: {}, credentials: "same-origin" };
  if (options.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || {};
    throw new ApiError(response.status, error.code || "error", error.message || `${response.status} from ${path}`);
  }
  return body;
}

function failure(error) {
  if (error instanceof ApiError && error.status === 401) { signIn(error.message); return h("p", {}, ""); }
  return h("div", { class: "error", role: "alert" }, error.message || String(error));
}

/// Runs an action, then refreshes the page; errors are shown above the page.
async function act(label, call) {
  try {
    await call();
  } catch (error) {
    main().prepend(h("div", { class: "error", role: "alert" }, `${label}: ${error.message}`));
    return;
  }
  route();
}

function operator() { return session && session.role === "operator"; }

function progress(counts, total) {
  const bar = h("div", { class: "bar", title: STATES.map((s) => `${s} ${counts[s]}`).join(", ") });
  for (const state of ["succeeded", "failed", "cancelled", "leased"]) {
    if (!counts[state] || !total) continue;
    const part = h("span", { class: `s-${state}` });
    part.style.width = `${(100 * counts[state]) / total}%`;
    bar.append(part);
  }
  return bar;
}

// ---------------------------------------------------------------------------------------------
// Session and live updates

function signIn(reason) {
  if (live.source) { live.source.close(); live.source = null; }
  const input = h("input", { type: "password", id: "token", placeholder: "read-only or operator token", autocomplete: "off" });
  const message = h("p", { class: "muted" }, reason || "Give a read-only or operator token once; it is exchanged for a session cookie and not kept in the browser.");
  const form = h("form", { class: "card signin", id: "signin", onsubmit: async (event) => {
    event.preventDefault();
    try {
      session = await api("/api/v1/session", { method: "POST", body: { token: input.value } });
      session.signed_in = true;
      input.value = "";
      start();
    } catch (error) {
      message.textContent = error.message;
      message.className = "error";
    }
  } }, h("h1", {}, "Sign in"), message, input, h("button", { class: "primary", type: "submit" }, "Sign in"));
  show(form);
  input.focus();
}

function connect(run) {
  if (live.source && live.watching === run) return;
  if (live.source) live.source.close();
  live.watching = run;
  const source = new EventSource(run ? `/api/v1/events?run=${enc(run)}` : "/api/v1/events");
  live.source = source;
  const badge = document.getElementById("live");
  source.onopen = () => { badge.textContent = "live"; badge.className = "live on"; };
  source.onerror = () => { badge.textContent = "reconnecting"; badge.className = "live off"; };
  const runs = (list) => {
    const now = Date.now();
    for (const item of list) {
      live.runs.set(item.name, item);
      const series = live.rates.get(item.name) || [];
      series.push([now, item.rate_per_s]);
      while (series.length > 240) series.shift();
      live.rates.set(item.name, series);
    }
  };
  source.addEventListener("snapshot", (event) => {
    const data = JSON.parse(event.data);
    live.runs = new Map();
    runs(data.runs);
    if (data.shards && run) live.shards.set(run, new Map(data.shards.map((s) => [s.key, s])));
    if (data.workers) live.workers = data.workers;
    if (view) view.refresh("snapshot");
  });
  source.addEventListener("runs", (event) => { runs(JSON.parse(event.data).runs); if (view) view.refresh("runs"); });
  source.addEventListener("shards", (event) => {
    const data = JSON.parse(event.data);
    const shards = live.shards.get(data.run) || new Map();
    for (const shard of data.shards) shards.set(shard.key, shard);
    live.shards.set(data.run, shards);
    if (view) view.refresh("shards");
  });
  source.addEventListener("workers", (event) => { live.workers = JSON.parse(event.data); if (view) view.refresh("workers"); });
}

async function start() {
  try {
    session = await api("/api/v1/session");
  } catch (error) {
    show(failure(error));
    return;
  }
  if (!session.signed_in) { signIn(); return; }
  document.getElementById("who").replaceChildren(h("span", {}, `${session.role} session `),
    h("button", { id: "signout", onclick: async () => { await api("/api/v1/session", { method: "DELETE" }); session = null; signIn("Signed out."); } }, "Sign out"));
  if (!start.listening) {
    window.addEventListener("hashchange", route);
    start.listening = true;
  }
  route();
}

// ---------------------------------------------------------------------------------------------
// Pages

const pages = {
  "": runsPage,
  run: runPage,
  jobs: jobsPage,
  job: jobPage,
  failures: failuresPage,
  workers: workersPage,
  gallery: galleryPage,
};

function route() {
  if (!session || !session.signed_in) return;
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...args] = path.split("/").map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === (name || "runs"));
  const page = pages[name] || runsPage;
  view = null;
  page(args, params);
}

function rateChart(name) {
  const series = live.rates.get(name) || [];
  const width = 600, height = 120, pad = 24;
  const box = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, "aria-label": "images per second" });
  const max = Math.max(1, ...series.map(([, rate]) => rate));
  if (series.length > 1) {
    const t0 = series[0][0], t1 = series[series.length - 1][0];
    const x = (t) => pad + ((width - 2 * pad) * (t - t0)) / Math.max(1, t1 - t0);
    const y = (rate) => height - pad - ((height - 2 * pad) * rate) / max;
    box.append(svg("polyline", { points: series.map(([t, rate]) => `${x(t).toFixed(1)},${y(rate).toFixed(1)}`).join(" ") }));
  }
  box.append(svg("text", { x: 4, y: 12 }, `${fmt(max, 1)} img/s`), svg("text", { x: 4, y: height - 6 }, "0"),
    svg("text", { x: width - 4, y: height - 6, "text-anchor": "end" }, series.length > 1 ? "since this page opened" : "waiting for updates"));
  return box;
}

function runActions(run) {
  if (!operator()) return h("span", { class: "muted" }, "");
  const post = (action) => () => act(`${action} ${run.name}`, () => api(`/api/v1/runs/${enc(run.name)}/${action}`, { method: "POST" }));
  return h("div", { class: "actions" },
    run.state === "active" && !run.finished ? h("button", { onclick: post("pause"), "data-action": "pause" }, "Pause") : null,
    run.state === "paused" ? h("button", { onclick: post("resume"), "data-action": "resume" }, "Resume") : null,
    run.state !== "cancelled" && !run.finished ? h("button", { class: "danger", "data-action": "cancel", onclick: () => confirm(`Cancel every unfinished job of ${run.name}?`) && post("cancel")() }, "Cancel") : null);
}

function runRow(run) {
  return h("tr", { "data-run": run.name },
    h("td", {}, h("a", { href: `#/run/${enc(run.name)}` }, run.name)),
    h("td", {}, pill(run.finished && run.state === "active" ? "finished" : run.state)),
    h("td", {}, progress(run.counts, run.total)),
    h("td", { class: "num", "data-progress": run.name }, `${fmt(done(run.counts))} / ${fmt(run.total)}`),
    h("td", { class: "num" }, fmt(run.counts.failed)),
    h("td", { class: "num" }, fmt(run.rate_per_s, 1)),
    h("td", { class: "num" }, run.finished ? "done" : duration(run.eta_seconds)),
    h("td", {}, runActions(run)));
}

async function runsPage() {
  connect(null);
  const render = () => {
    const runs = [...live.runs.values()];
    const table = h("table", { id: "runs" },
      h("thead", {}, h("tr", {}, ["Run", "State", "Progress", "Done", "Failed", "Images/s", "ETA", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, runs.length ? runs.map(runRow) : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No runs yet: submit one with `acufarm submit`."))));
    const charts = runs.filter((run) => !run.finished).map((run) => h("div", { class: "card" }, h("h2", {}, `${run.name}: images/s`), rateChart(run.name)));
    show(h("h1", {}, "Runs"), table, ...charts);
  };
  try {
    const list = await api("/api/v1/runs");
    for (const run of list.runs) if (!live.runs.has(run.name)) live.runs.set(run.name, run);
  } catch (error) { show(failure(error)); return; }
  view = { refresh: render };
  render();
}

async function runPage([name]) {
  connect(name);
  let detail;
  let selected = null;
  try {
    detail = await api(`/api/v1/runs/${enc(name)}`);
    const shards = await api(`/api/v1/runs/${enc(name)}/shards`);
    live.shards.set(name, new Map(shards.shards.map((s) => [s.key, s])));
  } catch (error) { show(failure(error)); return; }
  const grid = h("div", { class: "grid", id: "shard-grid" });
  const panel = h("div", { class: "card", id: "shard-panel" }, h("span", { class: "muted" }, "Click a shard for its counts and jobs."));
  const summary = h("div", { class: "card", id: "run-summary" });
  const drawSummary = () => {
    const run = live.runs.get(name) || detail;
    summary.replaceChildren(
      h("div", { class: "stats" },
        h("div", { class: "stat" }, h("b", { id: "run-state" }, run.state), "state"),
        h("div", { class: "stat" }, h("b", { id: "run-done", "data-progress": name }, `${fmt(done(run.counts))} / ${fmt(run.total)}`), "done"),
        ...STATES.map((s) => h("div", { class: "stat" }, h("b", { "data-count": s }, fmt(run.counts[s])), s)),
        h("div", { class: "stat" }, h("b", {}, fmt(run.rate_per_s, 1)), "images/s"),
        h("div", { class: "stat" }, h("b", {}, run.finished ? "done" : duration(run.eta_seconds)), "ETA")),
      h("p", {}, progress(run.counts, run.total)), runActions(run));
  };
  const drawPanel = () => {
    const shard = selected && live.shards.get(name).get(selected);
    if (!shard) return;
    const failedJobs = shard.counts.failed;
    panel.replaceChildren(h("h2", {}, `Shard ${shard.key} `, pill(shard.state)),
      h("p", {}, STATES.map((s) => `${s} ${shard.counts[s]}`).join(" · ")),
      h("div", { class: "actions" },
        h("a", { href: `#/jobs/${enc(name)}?shard=${enc(shard.key)}` }, "Jobs of this shard"),
        operator() && failedJobs ? h("button", { class: "primary", id: "resubmit-shard", onclick: () => act(`resubmit shard ${shard.key}`,
          () => api(`/api/v1/runs/${enc(name)}/resubmit`, { method: "POST", body: { shards: [shard.key] } })) }, `Resubmit ${failedJobs} failed`) : null));
  };
  const drawGrid = () => {
    const shards = [...live.shards.get(name).values()];
    grid.replaceChildren(...shards.map((shard) => {
      const cell = h("div", { class: `cell s-${shard.state}${shard.key === selected ? " selected" : ""}`, "data-shard": shard.key, "data-state": shard.state,
        title: `${shard.key}: ${STATES.map((s) => `${s} ${shard.counts[s]}`).join(", ")}`, role: "button" });
      cell.addEventListener("click", () => { selected = shard.key; drawGrid(); drawPanel(); });
      return cell;
    }));
  };
  const qa = qaSection(detail);
  show(h("h1", {}, `Run ${name}`),
    h("p", {}, h("a", { href: `#/jobs/${enc(name)}` }, "Jobs"), " · ", h("a", { href: `#/failures/${enc(name)}` }, "Failures"), " · ",
      h("a", { href: `#/gallery/${enc(name)}` }, "Gallery"), " · ", h("span", { class: "muted" }, `output ${detail.output_url}`)),
    summary,
    h("h2", {}, `Shards (${live.shards.get(name).size})`),
    h("div", { class: "legend" }, ["queued", "running", "succeeded", "failed", "cancelled"].map((s) => h("span", {}, h("i", { class: `s-${s}` }), s))),
    grid, panel,
    h("div", { class: "card" }, h("h2", {}, "Images/s"), rateChart(name)),
    qa,
    detail.quarantined.length ? h("div", { class: "card" }, h("h2", {}, "Quarantined workers"), detail.quarantined.map((q) => h("p", {}, `${q.worker}: ${q.failures} failures in a row since ${when(q.since)}; ${q.errors.join("; ")}`))) : null,
    h("h2", {}, "Parameters"), h("pre", { id: "spec" }, detail.spec_toml));
  drawSummary(); drawGrid();
  view = { refresh: (kind) => { if (kind !== "workers") { drawSummary(); drawGrid(); drawPanel(); } } };
}

/// The run's QA drift per point (table and chart), from its summary once finished.
function qaSection(detail) {
  const qa = detail.qa;
  if (!detail.parameters.qa) return h("div", { class: "card muted" }, "This run has no [qa] section, so outputs are not checked for landmark drift.");
  if (!qa || !qa.points) return h("div", { class: "card muted" }, "The QA summary (drift per point) appears here when the run has finished.");
  const points = Object.entries(qa.points);
  const max = Math.max(1, ...points.map(([, d]) => d.p95 || 0));
  const chart = svg("svg", { class: "hbar", viewBox: `0 0 420 ${points.length * 20 + 10}`, width: 420 });
  points.forEach(([name, d], i) => {
    chart.append(svg("text", { x: 0, y: i * 20 + 14 }, name), svg("rect", { x: 150, y: i * 20 + 4, height: 12, width: (220 * (d.p95 || 0)) / max }),
      svg("text", { x: 375, y: i * 20 + 14 }, `${fmt(d.p95, 1)} px`));
  });
  return h("div", { class: "card", id: "qa" }, h("h2", {}, "Landmark drift per point (px)"),
    h("p", {}, `${fmt(qa.checked)} checked, ${fmt(qa.first_try)} passed first try, ${fmt(qa.regenerated)} regenerated, ${fmt(qa.failed)} failed`),
    h("table", {}, h("thead", {}, h("tr", {}, ["Point", "n", "mean", "median", "p95", "max"].map((t) => h("th", {}, t)))),
      h("tbody", {}, points.map(([name, d]) => h("tr", {}, h("td", {}, name), h("td", { class: "num" }, fmt(d.n)), h("td", { class: "num" }, fmt(d.mean, 2)),
        h("td", { class: "num" }, fmt(d.median, 2)), h("td", { class: "num" }, fmt(d.p95, 2)), h("td", { class: "num" }, fmt(d.max, 2)))))),
    h("h2", {}, "p95 drift"), chart);
}

async function jobsPage([name], params) {
  connect(name);
  const fields = { state: params.get("state") || "", shard: params.get("shard") || "", worker: params.get("worker") || "", class: params.get("class") || "", sample: params.get("sample") || "" };
  const after = params.get("after");
  const query = new URLSearchParams(Object.entries(fields).filter(([, v]) => v));
  if (after) query.set("after", after);
  let page;
  try { page = await api(`/api/v1/runs/${enc(name)}/jobs?${query}`); } catch (error) { show(failure(error)); return; }
  const inputs = {
    state: h("select", { name: "state" }, h("option", { value: "" }, "any state"), STATES.map((s) => h("option", { value: s, selected: fields.state === s }, s))),
    shard: h("input", { name: "shard", placeholder: "shard", value: fields.shard }),
    worker: h("input", { name: "worker", placeholder: "worker", value: fields.worker }),
    class: h("select", { name: "class" }, h("option", { value: "" }, "any failure"), ["retryable", "permanent", "qa"].map((c) => h("option", { value: c, selected: fields.class === c }, c))),
    sample: h("input", { name: "sample", placeholder: "sample id prefix", value: fields.sample }),
  };
  const apply = (event) => {
    event.preventDefault();
    const next = new URLSearchParams(Object.entries(inputs).map(([k, el]) => [k, el.value]).filter(([, v]) => v));
    location.hash = `#/jobs/${enc(name)}?${next}`;
  };
  const next = page.next_after ? new URLSearchParams({ ...Object.fromEntries(Object.entries(fields).filter(([, v]) => v)), after: page.next_after }) : null;
  show(h("h1", {}, h("a", { href: `#/run/${enc(name)}` }, name), " · jobs"),
    h("form", { class: "filters", onsubmit: apply }, Object.values(inputs), h("button", { type: "submit" }, "Filter")),
    h("table", { id: "jobs" }, h("thead", {}, h("tr", {}, ["Job", "Shard", "Sample", "State", "Attempt", "Worker", "Failure", "Updated"].map((t) => h("th", {}, t)))),
      h("tbody", {}, page.jobs.length ? page.jobs.map((job) => h("tr", {},
        h("td", {}, h("a", { href: `#/job/${job.id}` }, job.id)), h("td", {}, job.shard), h("td", {}, job.sample_id), h("td", {}, pill(job.state)),
        h("td", { class: "num" }, job.attempt), h("td", {}, job.worker || "–"), h("td", {}, job.failure_class ? `${job.failure_class}: ${job.message}` : ""),
        h("td", {}, when(job.updated_at)))) : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No jobs match.")))),
    h("p", {}, next ? h("a", { href: `#/jobs/${enc(name)}?${next}`, id: "next-page" }, "Next page →") : h("span", { class: "muted" }, "Last page.")));
}

/// An image with the 8 landmarks drawn over it (from a QA record), scaled to the thumbnail.
function figure(job, which, points, size, caption) {
  const img = h("img", { src: `/api/v1/jobs/${job.id}/image?which=${which}&size=512`, alt: `${which} of ${job.sample_id}`, "data-image": which });
  const overlay = svg("svg", { viewBox: `0 0 ${size ? size[0] : 1} ${size ? size[1] : 1}`, preserveAspectRatio: "none" });
  for (const [name, [x, y]] of Object.entries(points || {})) {
    overlay.append(svg("circle", { cx: x, cy: y, r: Math.max(2, (size ? size[0] : 512) / 120), fill: "#ffd33d", stroke: "#24292f", "stroke-width": Math.max(1, (size ? size[0] : 512) / 400), "data-point": name },
      svg("title", {}, name)));
  }
  return h("figure", { class: "figure", "data-figure": which }, img, size ? overlay : null, h("figcaption", {}, caption));
}

async function jobPage([id]) {
  let job;
  try { job = await api(`/api/v1/jobs/${enc(id)}`); } catch (error) { show(failure(error)); return; }
  connect(job.run);
  const check = job.qa.length ? job.qa[job.qa.length - 1] : null;
  const sourcePoints = check ? check.source_points : null;
  const verdict = check ? h("p", { id: "verdict" }, "QA verdict of the last try: ", h("span", { class: `verdict-${check.verdict}` }, check.verdict), check.reason ? ` — ${check.reason}` : "") : null;
  const landmarks = job.qa_enabled
    ? h("div", { class: "pair" },
      figure(job, "source", sourcePoints, check && check.source_size, check ? `source with its ${Object.keys(sourcePoints || {}).length} points` : "source (no QA check recorded yet)"),
      job.state === "succeeded"
        ? figure(job, "output", check && check.output_points, check && check.output_size, check ? `output with its ${Object.keys(check.output_points || {}).length} points` : "output")
        : h("div", { class: "card", id: "no-output" }, h("b", {}, "No output image"), h("p", {}, check && check.reason ? `Discarded: ${check.reason}` : `The job is ${job.state}.`)))
    : h("div", {}, h("div", { class: "notice", id: "no-qa" }, "This run has no [qa] section, so no landmarks were measured: add [qa] to the run spec (see examples/acusim.toml) and submit it again to see the 8 points and their drift."),
      h("div", { class: "pair" }, figure(job, "source", null, null, "source"), job.state === "succeeded" ? figure(job, "output", null, null, "output") : null));
  const drift = check && Object.keys(check.drift_px || {}).length ? h("table", { id: "drift" }, h("thead", {}, h("tr", {}, h("th", {}, "Point"), h("th", { class: "num" }, "drift (px)"))),
    h("tbody", {}, Object.entries(check.drift_px).map(([name, d]) => h("tr", {}, h("td", {}, name), h("td", { class: "num" }, fmt(d, 2)))))) : null;
  const timings = job.result && job.result.timings ? h("table", {}, h("tbody", {}, Object.entries(job.result.timings).map(([stage, s]) => h("tr", {}, h("td", {}, stage), h("td", { class: "num" }, `${fmt(s, 3)} s`))))) : null;
  const regenerate = operator() && job.failure_class === "qa" && job.state === "failed"
    ? h("button", { class: "primary", id: "regenerate", onclick: () => act("regenerate", () => api(`/api/v1/runs/${enc(job.run)}/regenerate`, { method: "POST", body: { jobs: [job.id] } })) }, "Regenerate with new seeds") : null;
  const resubmit = operator() && job.state === "failed"
    ? h("button", { id: "resubmit-job", onclick: () => act("resubmit", () => api(`/api/v1/runs/${enc(job.run)}/resubmit`, { method: "POST", body: { jobs: [job.id] } })) }, "Resubmit") : null;
  show(h("h1", {}, `Job ${job.id} · ${job.sample_id} `, pill(job.state)),
    h("p", {}, h("a", { href: `#/run/${enc(job.run)}` }, job.run), ` · shard ${job.shard} · attempt ${job.attempt} · worker ${job.worker || "–"} · reseed ${job.spec.reseed || 0} · updated ${when(job.updated_at)}`),
    job.message ? h("div", { class: "error", id: "job-error" }, `${job.failure_class}: ${job.message}`) : null,
    h("div", { class: "actions" }, regenerate, resubmit),
    verdict, landmarks, drift,
    h("h2", {}, "Attempts"),
    job.attempts.length || job.state === "succeeded" ? h("table", { id: "attempts" }, h("thead", {}, h("tr", {}, ["#", "Worker", "Ended", "Outcome", "Failure"].map((t) => h("th", {}, t)))),
      h("tbody", {}, job.attempts.map((a) => h("tr", {}, h("td", {}, a.attempt), h("td", {}, a.worker || "–"), h("td", {}, when(a.ended_at)), h("td", {}, a.outcome),
        h("td", {}, a.failure_class ? `${a.failure_class}: ${a.message}` : a.message, a.log.length ? h("pre", { class: "log" }, a.log.join("\n")) : null))),
        job.state === "succeeded" ? h("tr", {}, h("td", {}, job.attempt), h("td", {}, job.worker || "–"), h("td", {}, when(job.updated_at)), h("td", {}, "succeeded"), h("td", {}, "")) : null))
      : h("p", { class: "muted" }, "No attempt has ended yet."),
    timings ? h("h2", {}, "Timings") : null, timings,
    h("h2", {}, "Spec"), h("pre", {}, JSON.stringify(job.spec, null, 2)));
}

async function failuresPage([name]) {
  connect(name);
  let jobs = [];
  try {
    let after = null;
    do {
      const page = await api(`/api/v1/runs/${enc(name)}/jobs?state=failed&limit=500${after ? `&after=${after}` : ""}`);
      jobs = jobs.concat(page.jobs);
      after = page.next_after;
    } while (after && jobs.length < 5000);
  } catch (error) { show(failure(error)); return; }
  const groups = new Map();
  for (const job of jobs) {
    const key = `${job.failure_class}\u0000${job.message}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(job);
  }
  const chosen = new Set();
  const resubmit = (ids) => act("resubmit", () => api(`/api/v1/runs/${enc(name)}/resubmit`, { method: "POST", body: { jobs: ids } }));
  const regenerate = (ids) => act("regenerate", () => api(`/api/v1/runs/${enc(name)}/regenerate`, { method: "POST", body: { jobs: ids } }));
  const cards = [...groups.values()].sort((a, b) => b.length - a.length).map((list) => {
    const [first] = list;
    const ids = list.map((job) => job.id);
    return h("div", { class: "card", "data-failure-class": first.failure_class },
      h("h2", {}, `${list.length} × ${first.failure_class}`), h("p", {}, first.message),
      operator() ? h("div", { class: "actions" }, h("button", { onclick: () => resubmit(ids) }, `Resubmit all ${list.length}`),
        first.failure_class === "qa" ? h("button", { onclick: () => regenerate(ids) }, `Regenerate all ${list.length}`) : null) : null,
      h("table", {}, h("tbody", {}, list.slice(0, 200).map((job) => h("tr", {},
        operator() ? h("td", {}, h("input", { type: "checkbox", onchange: (e) => (e.target.checked ? chosen.add(job.id) : chosen.delete(job.id)) })) : null,
        h("td", {}, h("a", { href: `#/job/${job.id}` }, job.id)), h("td", {}, job.shard), h("td", {}, job.sample_id), h("td", {}, job.worker || "–"),
        operator() ? h("td", {}, h("button", { onclick: () => resubmit([job.id]) }, "Resubmit")) : null)))));
  });
  show(h("h1", {}, h("a", { href: `#/run/${enc(name)}` }, name), ` · ${jobs.length} failed jobs`),
    operator() && jobs.length ? h("div", { class: "actions" },
      h("button", { onclick: () => resubmit([...chosen]) }, "Resubmit selected"),
      h("button", { onclick: () => regenerate([...chosen]) }, "Regenerate selected"),
      h("button", { class: "primary", onclick: () => act("resubmit", () => api(`/api/v1/runs/${enc(name)}/resubmit`, { method: "POST", body: { all: true } })) }, "Resubmit every failed job")) : null,
    cards.length ? cards : h("p", { class: "muted" }, "No failed jobs."));
}

async function workersPage() {
  connect(null);
  const render = () => {
    const list = live.workers || { workers: [], presence: false };
    const rows = list.workers.map((w) => h("tr", { "data-worker": w.name },
      h("td", {}, w.name), h("td", {}, pill(w.state)), h("td", {}, w.hostname || "–"), h("td", {}, w.gpu || "–"), h("td", { class: "num" }, w.gpu_memory_bytes ? `${fmt(w.gpu_memory_bytes / 2 ** 30, 0)} GiB` : "–"),
      h("td", {}, (w.execution_providers || []).join(", ")),
      h("td", {}, w.bundle_name || "–"), h("td", { class: "num" }, w.jobs_held), h("td", { class: "num" }, fmt(w.images_per_second, 2)), h("td", {}, when(w.last_heartbeat)),
      h("td", {}, w.quarantine.map((q) => h("div", {}, `${q.run}: ${q.failures} failures — ${q.errors.join("; ")} `,
        operator() ? h("button", { "data-release": w.name, onclick: () => act(`release ${w.name}`, () => api(`/api/v1/workers/${enc(w.name)}/release`, { method: "POST", body: { run: q.run } })) }, "Release") : null)))));
    show(h("h1", {}, "Workers"),
      list.presence ? null : h("div", { class: "notice" }, "Live presence (Redis) is not reachable from this coordinator: only quarantined workers are listed."),
      h("table", { id: "workers" }, h("thead", {}, h("tr", {}, ["Name", "State", "Host", "GPU", "Memory", "Providers", "Bundle", "Jobs", "Images/s", "Last heartbeat", "Quarantine"].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 11, class: "muted" }, "No workers seen.")))));
  };
  try { live.workers = await api("/api/v1/workers"); } catch (error) { show(failure(error)); return; }
  view = { refresh: (kind) => { if (kind === "workers" || kind === "snapshot") render(); } };
  render();
}

async function galleryPage([name]) {
  connect(name);
  let page;
  try { page = await api(`/api/v1/runs/${enc(name)}/jobs?state=succeeded&order=newest&limit=24`); } catch (error) { show(failure(error)); return; }
  show(h("h1", {}, h("a", { href: `#/run/${enc(name)}` }, name), " · newest outputs"),
    page.jobs.length ? h("div", { class: "gallery", id: "gallery" }, page.jobs.map((job) => h("a", { class: "card", href: `#/job/${job.id}` },
      h("div", { class: "pair" }, h("img", { src: `/api/v1/jobs/${job.id}/image?which=source&size=128`, alt: "source" }),
        h("img", { src: `/api/v1/jobs/${job.id}/image?which=output&size=128`, alt: "output" })), h("div", { class: "muted" }, job.sample_id))))
      : h("p", { class: "muted" }, "No outputs yet."));
}

document.addEventListener("DOMContentLoaded", start);
