// Smart Tuner dashboard: plain DOM and SVG, no framework, no build step.
// The first screen comes from api/state; then an EventSource (id = the event's seq) keeps it
// live, and the browser's own reconnect sends Last-Event-ID, so nothing is missed or doubled.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let csrf = "";
let current = null;      // the last api/state
let lastSeq = 0;         // the last event seen on the stream
let refreshTimer = null;
const decisionTypes = new Set();

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.setAttribute("class", v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(digits);
  return String(v);
}

function duration(s) {
  if (s === null || s === undefined) return "-";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s % 60).padStart(2, "0")}s`;
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw new Error(`${url}: ${r.status} ${(await r.text()).slice(0, 200)}`);
  return r.json();
}

// --- tabs ---------------------------------------------------------------------------------
for (const b of document.querySelectorAll("#tabs button")) {
  b.addEventListener("click", () => {
    for (const x of document.querySelectorAll("#tabs button")) x.classList.toggle("active", x === b);
    for (const p of document.querySelectorAll(".pane")) p.classList.toggle("active", p.id === `pane-${b.dataset.tab}`);
    if (b.dataset.tab === "decisions") loadDecisions();
  });
}

// --- header ---------------------------------------------------------------------------------
function renderHeader(s) {
  const o = s.overview;
  document.getElementById("run-id").textContent = o.run_id || "";
  const live = document.getElementById("live");
  // a finished run is over even while its coordinator is still exiting (it holds the log a moment longer)
  const over = Boolean(o.status);
  live.textContent = over ? `ended: ${o.status}` : (s.running ? "live" : "not running");
  live.className = "badge " + (over || !s.running ? "ended" : "live");
  document.getElementById("strategy").textContent = `${o.strategy || "-"} (seed ${fmt(o.seed)})`;
  document.getElementById("phase").textContent = `phase ${o.phase}${o.finish_reason ? " - " + o.finish_reason : ""}`;
  document.getElementById("champion").textContent = o.champion
    ? `${fmt(o.champion.objective)} (${o.champion.segment_id}, step ${o.champion.step})` : "-";
  const bar = document.getElementById("budget");
  bar.max = o.budget_steps || Math.max(1, o.steps_spent);
  bar.value = o.steps_spent;
  document.getElementById("steps").textContent = `${o.steps_spent} of ${o.budget_steps ?? "no budget"}`;
  document.getElementById("eta").textContent = o.eta_s === null ? "-" : duration(o.eta_s);
  document.getElementById("stop").disabled = !s.running || over;
  document.getElementById("running").textContent = (s.segments_running || [])
    .map(r => `${r.segment_id} ${r.done}/${r.steps}${r.train_loss === null ? "" : " loss " + fmt(r.train_loss)}`).join(" · ");
}

// --- lineage --------------------------------------------------------------------------------
function renderLineage(tree) {
  const svg = document.getElementById("lineage");
  svg.replaceChildren();
  const nodes = tree.nodes;
  if (!nodes.length) { svg.append(el("svg:text", { x: 10, y: 20 }, "no segment yet")); svg.setAttribute("height", 30); return; }
  const lanes = [];
  for (const n of nodes) { const k = n.trial_id || n.id; if (!lanes.includes(k)) lanes.push(k); }
  const maxStep = Math.max(1, ...nodes.map(n => n.end_step));
  const left = 90, right = 30, laneH = 34, top = 24;
  const width = Math.max(700, Math.min(3000, 40 + maxStep * 1.6));
  const height = top + lanes.length * laneH + 20;
  svg.setAttribute("width", width + left + right);
  svg.setAttribute("height", height);
  const x = s => left + (s / maxStep) * width;
  const y = n => top + lanes.indexOf(n.trial_id || n.id) * laneH + laneH / 2;
  for (let s = 0; s <= maxStep; s += Math.max(1, Math.ceil(maxStep / 10 / 10) * 10)) {
    svg.append(el("svg:line", { x1: x(s), x2: x(s), y1: 14, y2: height - 10, class: "axis" }));
    svg.append(el("svg:text", { x: x(s) - 8, y: 12 }, String(s)));
  }
  const byId = Object.fromEntries(nodes.map(n => [n.id, n]));
  lanes.forEach((k, i) => {
    const first = nodes.find(n => (n.trial_id || n.id) === k);
    svg.append(el("svg:text", { x: 4, y: top + i * laneH + laneH / 2 + 4, class: "lane-label" },
      `${k}${first && first.sampler ? " " + first.sampler : ""}`.slice(0, 16)));
  });
  for (const e of tree.edges) {
    const a = byId[e.from], b = byId[e.to];
    if (!a || !b) continue;
    const x1 = x(a.end_step), y1 = y(a), x2 = x(b.start_step) + 2, y2 = y(b);
    const d = y1 === y2 ? `M${x1},${y1} L${x2},${y2}` : `M${x1},${y1} C${x1 + 20},${y1} ${x2 - 20},${y2} ${x2},${y2}`;
    const path = el("svg:path", { d, class: `edge ${e.kind}${e.champion_path ? " path" : ""}`, "data-seq": e.seq,
      onclick: () => inspect(e.seq, `edge ${e.from} → ${e.to} (${e.kind})`) });
    path.append(el("svg:title", {}, `${e.kind}: ${e.label}`));
    svg.append(path);
    if (e.kind !== "trains-on" && e.label) {
      svg.append(el("svg:text", { x: x2 + 4, y: y2 - 7, class: "edge-label" }, e.label.slice(0, 60)));
    }
  }
  for (const n of nodes) {
    const cls = n.champion_path ? "path" : n.status === "failed" ? "failed" : n.lost ? "lost" : n.status;
    const x0 = x(n.start_step) + 2, x1 = Math.max(x(n.end_step), x0 + 6);
    const line = el("svg:rect", { x: x0, y: y(n) - 5, width: x1 - x0, height: 10, rx: 4,
      class: `seg ${cls}`, "data-segment": n.id, onclick: () => inspectNode(n) });
    line.append(el("svg:title", {}, `${n.id}: steps ${n.start_step}-${n.end_step}, objective ${fmt(n.objective)}, ${n.status}`));
    svg.append(line);
  }
}

function inspectNode(n) {
  for (const s of document.querySelectorAll(".seg.selected")) s.classList.remove("selected");
  const mine = document.querySelector(`[data-segment="${CSS.escape(n.id)}"]`);
  if (mine) mine.classList.add("selected");
  const body = document.getElementById("inspect-body");
  body.replaceChildren(
    el("h3", {}, `segment ${n.id}`),
    el("p", {}, `trial ${n.trial_id} (${n.sampler || "-"}), round ${fmt(n.round)}, steps ${n.start_step}-${n.end_step}, ${n.status}` +
      (n.failure ? `: ${n.failure}` : "")),
    el("p", {}, `objective ${fmt(n.objective)}, diagonality ${fmt(n.diagonality, 3)}`),
    el("p", {}, n.reason || ""),
  );
  if (n.alignment) body.append(el("img", { src: `files/${n.alignment}`, alt: `alignment of ${n.id}`, class: "sample" }));
  if (n.tts) body.append(el("img", { src: `files/${n.tts}`, alt: `mels and gate of ${n.id}`, class: "sample tts" }));
  body.append(el("pre", {}, JSON.stringify(n.hparams, null, 1)));
  const links = el("p", {});
  if (n.proposed_seq) links.append(el("button", { type: "button", onclick: () => inspect(n.proposed_seq, "its proposal") }, `proposal #${n.proposed_seq}`), " ");
  links.append(el("button", { type: "button", onclick: () => inspect(n.scheduled_seq, "its scheduling") }, `scheduling #${n.scheduled_seq}`));
  body.append(links);
}

async function inspect(seq, what) {
  const body = document.getElementById("inspect-body");
  body.replaceChildren(el("p", { class: "hint" }, `loading #${seq}…`));
  try {
    const ev = await getJSON(`api/event/${seq}`);
    const data = ev.data || {};
    body.replaceChildren(
      el("h3", {}, `#${ev.seq} ${ev.type}`),
      el("p", { class: "hint" }, `${what || ""} · ${new Date(ev.ts * 1000).toLocaleString()} · ${ev.actor}`),
      el("p", { class: "reason" }, data.reason || ev.gist || ""),
    );
    if (data.evidence) body.append(el("h4", {}, "evidence"), el("pre", { class: "evidence" }, JSON.stringify(data.evidence, null, 1)));
    const rest = Object.fromEntries(Object.entries(data).filter(([k]) => k !== "evidence" && k !== "reason"));
    body.append(el("h4", {}, "event"), el("pre", {}, JSON.stringify(rest, null, 1)));
    if (ev.cause_chain && ev.cause_chain.length) {
      const ol = el("ol", { class: "decisions cause-chain" });
      for (const c of ev.cause_chain) {
        ol.append(el("li", { onclick: c.seq ? () => inspect(c.seq, "a cause") : null }, c.seq ? `#${c.seq} ${c.type}: ${c.gist}` : c.gist));
      }
      body.append(el("h4", {}, "caused by"), ol);
    }
    if (ev.correlated && ev.correlated.length) {
      const p = el("p", {});
      for (const s of ev.correlated.slice(0, 40)) p.append(el("button", { type: "button", onclick: () => inspect(s, "correlated") }, `#${s}`), " ");
      body.append(el("h4", {}, "same decision chain (corr)"), p);
    }
  } catch (err) {
    body.replaceChildren(el("p", { class: "err" }, String(err)));
  }
}

// --- decisions ------------------------------------------------------------------------------
async function loadDecisions() {
  const list = document.getElementById("decisions");
  try {
    const r = await getJSON("api/decisions?after=0&limit=2000");
    list.replaceChildren(...r.events.map(decisionItem));
  } catch (err) { list.replaceChildren(el("li", { class: "err" }, String(err))); }
}

function decisionItem(ev) {
  const reason = (ev.data && (ev.data.reason || ev.data.detail)) || "";
  return el("li", { "data-seq": ev.seq, onclick: () => inspect(ev.seq, "decision") },
    el("span", { class: "type" }, `#${ev.seq} ${ev.type}`), " ", reason);
}

// --- curves ---------------------------------------------------------------------------------
function chart(title, points, key) {
  const w = 360, h = 170, pad = 34;
  const pts = points.filter(p => p[key] !== null && p[key] !== undefined);
  const box = el("div", { class: "chart" }, el("h3", {}, title));
  const svg = el("svg:svg", { width: w, height: h });
  box.append(svg);
  if (!pts.length) { svg.append(el("svg:text", { x: 10, y: 20 }, "no data yet")); return box; }
  const xs = pts.map(p => p.step), ys = pts.map(p => p[key]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const X = v => pad + (v - x0) / (x1 - x0) * (w - pad - 8), Y = v => h - 18 - (v - y0) / (y1 - y0) * (h - 40);
  svg.append(el("svg:text", { x: 2, y: 14 }, fmt(y1, 3)), el("svg:text", { x: 2, y: h - 18 }, fmt(y0, 3)),
    el("svg:text", { x: pad, y: h - 4 }, String(x0)), el("svg:text", { x: w - 40, y: h - 4 }, String(x1)));
  const path = pts.filter(p => p.champion_path);
  if (path.length > 1) svg.append(el("svg:polyline", { class: "line path", points: path.map(p => `${X(p.step)},${Y(p[key])}`).join(" ") }));
  for (const p of pts) {
    const c = el("svg:circle", { cx: X(p.step), cy: Y(p[key]), r: 3, class: `dot${p.champion_path ? " path" : ""}`,
      onclick: () => inspectSegment(p.segment_id) });
    c.append(el("svg:title", {}, `${p.segment_id} step ${p.step}: ${fmt(p[key])}`));
    svg.append(c);
  }
  return box;
}

function inspectSegment(id) {
  const n = current && current.lineage.nodes.find(x => x.id === id);
  if (n) inspectNode(n);
}

function renderCurves(c) {
  const names = { val_objective: "objective (selection set)", diagonality: "attention diagonality", gate_accuracy: "gate accuracy",
    grad_norm: "gradient norm (before clipping)", fr_gate_stop_rate: "free-running gate stop rate", learning_rate: "learning rate" };
  document.getElementById("curves").replaceChildren(...c.metrics.map(k => chart(names[k] || k, c.points, k)));
}

// --- schedule, trials -------------------------------------------------------------------------
function table(head, rows, textCols = new Set()) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...head.map(h => el("th", { class: textCols.has(h) ? "text" : null }, h)))),
    el("tbody", {}, ...rows.map(r => el("tr", {}, ...r.map((v, i) => el("td", { class: textCols.has(head[i]) ? "text" : null }, fmt(v)))))));
}

async function renderSchedule() {
  const box = document.getElementById("schedule");
  try {
    const s = await getJSON("api/schedule");
    if (!s.segments.length) { box.replaceChildren(el("p", { class: "hint" }, "no champion yet")); return; }
    const params = Object.keys(s.functions).sort();
    const rows = s.segments.map(seg => [seg.segment_id, seg.from_step, seg.to_step, ...params.map(p => seg.hparams[p])]);
    box.replaceChildren(table(["segment", "from", "to", ...params], rows, new Set(["segment"])),
      el("h4", {}, "changes along the way"),
      el("pre", {}, s.changes.length ? s.changes.map(c => `step ${c.at_step}: ${JSON.stringify(c.set)}`).join("\n") : "none: one setting throughout"));
  } catch (err) { box.replaceChildren(el("p", { class: "err" }, String(err))); }
}

function renderTrials(trials) {
  const params = [...new Set(trials.flatMap(t => Object.keys(t.hparams)))].sort();
  const rows = trials.map(t => [t.trial_id, t.sampler, t.status, t.value, t.pruned_step, ...params.map(p => t.hparams[p])]);
  document.getElementById("trials").replaceChildren(table(["trial", "sampler", "status", "value", "pruned at", ...params], rows,
    new Set(["trial", "sampler", "status"])));
}

// --- listening, health ------------------------------------------------------------------------
function renderListening(tts) {
  const box = document.getElementById("listening");
  const parts = [];
  const film = el("div", { class: "film" });
  for (const f of tts.filmstrip) {
    if (!f.alignment && !f.tts) continue;
    const fig = el("figure", {});
    if (f.alignment) fig.append(el("img", { src: `files/${f.alignment}`, alt: `alignment ${f.segment_id}` }));
    if (f.tts) fig.append(el("img", { src: `files/${f.tts}`, alt: `mels and gate ${f.segment_id}`, class: "tts" }));
    fig.append(el("figcaption", {}, `${f.segment_id} · step ${f.step}`));
    film.append(fig);
  }
  parts.push(el("h3", {}, "the same validation sentence along the champion's path: alignment; target mel, predicted mel, gate (yellow: predicted stop probability, white: target)"),
    film.childNodes.length ? film : el("p", { class: "hint" }, "no images yet"));
  for (const t of tts.tests.slice().reverse()) {
    const sec = el("section", { class: "test" }, el("h3", {}, `${t.final ? "final test" : "champion test"}: ${t.segment_id} at step ${t.step} (${t.n_sentences} ${t.test_set} sentences)`));
    if (t.error) sec.append(el("p", { class: "err" }, t.error));
    sec.append(el("pre", {}, Object.entries(t.metrics).map(([k, v]) => `${k} ${fmt(v)}`).join("\n")));
    for (const s of t.samples) {
      if (s.name.endsWith(".wav")) sec.append(el("div", { class: "sample" }, s.name, " ", el("audio", { controls: "", preload: "none", src: `files/${s.path}` })));
      else sec.append(el("div", { class: "sample" }, el("img", { src: `files/${s.path}`, alt: s.name })));
    }
    parts.push(sec);
  }
  box.replaceChildren(...parts);
}

function renderHealth(h) {
  const parts = [
    el("p", {}, `alerts sent ${h.alerts_sent}, failed ${h.alerts_failed}; refused messages ${h.refused_messages}; last event ${h.last_event_age_s === null ? "-" : duration(h.last_event_age_s) + " ago"}`),
    el("h3", {}, "workers"),
    table(["worker", "pid", "device", "status", "lost because"], h.workers.map(w => [w.worker_id, w.pid, w.device, w.status, w.lost_reason]),
      new Set(["worker", "device", "status", "lost because"])),
  ];
  for (const [name, list] of [["guard trips", h.guards], ["rollbacks", h.rollbacks], ["actor crashes", h.crashes]]) {
    parts.push(el("h3", {}, `${name} (${list.length})`));
    if (list.length) parts.push(el("ol", { class: "decisions" }, ...list.map(i => el("li", { onclick: () => inspect(i.seq, name) },
      `#${i.seq} ${i.kind} ${i.subject}${i.trial_id ? " (" + i.trial_id + ")" : ""}: ${i.detail}${i.gave_up ? " - gave up" : ""}`))));
  }
  document.getElementById("health").replaceChildren(...parts);
}

// --- state and stream ---------------------------------------------------------------------------
async function refresh() {
  refreshTimer = null;
  try {
    current = await getJSON("api/state");
    renderHeader(current);
    renderLineage(current.lineage);
    renderCurves(current.curves);
    renderTrials(current.trials);
    renderListening(current.tts);
    renderHealth(current.health);
    renderSchedule();
  } catch (err) {
    document.getElementById("run-id").textContent = String(err);
  }
}

function soon(ms) { if (!refreshTimer) refreshTimer = setTimeout(refresh, ms); }

function connect(after) {
  const stream = new EventSource(`events?after=${after}`);
  stream.onmessage = msg => {
    const seq = Number(msg.lastEventId);
    if (seq <= lastSeq) return;
    lastSeq = seq;
    const ev = JSON.parse(msg.data);
    if (ev.type === "MetricsObserved") { soon(5000); return; }
    soon(600);
    if (decisionTypes.has(ev.type) || (ev.data && ev.data.reason)) {
      const list = document.getElementById("decisions");
      if (list.childNodes.length) list.append(decisionItem(ev));
    }
  };
}

document.getElementById("stop").addEventListener("click", async () => {
  const reason = prompt("Stop the run? It finishes its segment, records the stop and exits. Reason:", "stopped from the dashboard");
  if (reason === null) return;
  const r = await fetch("api/stop", { method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify({ reason }) });
  const body = await r.json();
  alert(r.ok ? `stop request recorded as event #${body.seq}` : `refused: ${body.error}`);
});

(async () => {
  const s = await getJSON("api/session");
  csrf = s.csrf;
  await refresh();
  lastSeq = current ? current.seq : 0;
  connect(lastSeq);
  setInterval(() => { if (current && current.running) soon(0); }, 10000);  // the coordinator's exit is no event
})();
