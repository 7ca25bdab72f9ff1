// Trends page: an overview row per rubric, one line per group with its confidence band,
// alerts on the timeline, click a point to list the worst traces of that bucket. Text from
// the API only ever goes into textContent (trace IDs and explanations are untrusted).
// A server with a token: open the page as /#token=... (the fragment never reaches a server
// log); the token is kept in sessionStorage and sent as a bearer header.
"use strict";
const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#0969da", "#1a7f37", "#8250df", "#bf8700", "#cf222e", "#1b7c83", "#6e7781"];
const $ = (id) => document.getElementById(id);
const W = 960, H = 380, M = { l: 48, r: 16, t: 16, b: 36 };

function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

const HOUR = 3600e3, DAY = 24 * HOUR;

function token() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("evaluator-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("evaluator-token");
}

async function getJSON(path, params) {
  const url = path + "?" + new URLSearchParams(params);
  const t = token();
  const resp = await fetch(url, t ? { headers: { Authorization: "Bearer " + t } } : {});
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

function params() {
  return { rubric: $("rubric").value, by: $("by").value, since: $("since").value, bucket: $("bucket").value };
}

async function load() {
  const p = params();
  if (!p.rubric) { $("status").textContent = "no rubrics with scores yet"; return; }
  $("status").textContent = "loading…";
  try {
    const [doc, alerts] = await Promise.all([
      getJSON("api/trends", p), getJSON("api/alerts", { rubric: p.rubric }),
    ]);
    draw(doc, alerts.alerts);
    await reviewRows(p.rubric);
    await certRows(p.rubric);
    document.body.dataset.ready = "1";
  } catch (err) {
    $("status").textContent = "error: " + err.message;
  }
}

// Round steps in UTC: hours on a 1-day chart, days on a week, a week on months.
const STEPS = [HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY];

function ticks(t0, t1) {
  const step = STEPS.find((s) => (t1 - t0) / s <= 8) || STEPS[STEPS.length - 1];
  const out = [];
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) out.push(t);
  return out;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function tickLabel(t, span) {
  const d = new Date(t);
  const day = `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}`;
  if (span > 3 * DAY) return day;
  const hm = d.toISOString().slice(11, 16);
  return hm === "00:00" ? day : hm;
}

function pct(v) { return v === null ? "–" : `${Math.round(v * 100)}%`; }

function overviewRows(doc) {
  const tbody = $("overview").querySelector("tbody");
  tbody.replaceChildren();
  for (const r of doc.rubrics) {
    const row = document.createElement("tr");
    row.className = "overview-row";
    row.dataset.rubric = r.rubric;
    const versions = r.versions.length
      ? r.versions.map((v) => `${v.prompt_version ?? "(none)"}: mean ${v.mean.toFixed(3)}, pass ${pct(v.pass_rate)} (n=${v.count})`).join(" · ")
      : "no scores in the last 24 h";
    const cells = [r.rubric, versions, String(r.open_alerts), usd(r.judge_cost_usd_per_day, "/day")];
    for (const v of cells) {
      const td = document.createElement("td");
      td.textContent = v;
      row.appendChild(td);
    }
    tbody.appendChild(row);
  }
}

function usd(value, suffix = "") {
  // A model without a [pricing] entry has an unknown price: say so, never show $0.
  return value === null || value === undefined ? "unknown" : `$${value.toFixed(4)}${suffix}`;
}

function costRows(doc) {
  // Quality x cost: what each answer that passed all of its rubrics cost (judge + generator).
  const tbody = $("cost").querySelector("tbody");
  tbody.replaceChildren();
  for (const g of doc.groups) {
    const row = document.createElement("tr");
    row.className = "cost-row";
    const unpriced = (g.unpriced_models || []).length > 0;
    const cpp = g.cost_per_pass_usd === null && !unpriced ? "–" : usd(g.cost_per_pass_usd);
    const cells = [g.key, String(g.answers), String(g.passes), usd(g.judge_usd),
      usd(g.generator_usd), cpp];
    for (const v of cells) {
      const td = document.createElement("td");
      td.textContent = v;
      row.appendChild(td);
    }
    tbody.appendChild(row);
  }
}

function draw(doc, alerts) {
  const svg = $("chart");
  svg.replaceChildren();
  $("legend").replaceChildren();
  const t0 = Date.parse(doc.since), t1 = Date.parse(doc.until);
  const step = doc.bucket_seconds * 1000;
  const pts = doc.groups.flatMap((g) => g.buckets);
  $("status").textContent = `${doc.rubric} by ${doc.by}: ${pts.reduce((a, b) => a + b.count, 0)} scores in ${doc.groups.length} group(s), ${doc.bucket} buckets, ${Math.round((doc.confidence ?? 0.95) * 100)}% CI bands`;
  let lo = Math.min(...pts.map((b) => b.ci_low), 1), hi = Math.max(...pts.map((b) => b.ci_high), 0);
  if (!pts.length) { lo = 0; hi = 1; }
  const pad = Math.max(0.02, (hi - lo) * 0.1);
  lo = Math.max(0, lo - pad); hi = Math.min(1, hi + pad);
  const x = (t) => M.l + ((t + step / 2 - t0) / (t1 - t0 + step)) * (W - M.l - M.r);
  const y = (v) => H - M.b - ((v - lo) / (hi - lo || 1)) * (H - M.t - M.b);
  // axes and grid
  for (let i = 0; i <= 5; i++) {
    const v = lo + ((hi - lo) * i) / 5;
    el("line", { x1: M.l, x2: W - M.r, y1: y(v), y2: y(v), stroke: "#eaeef2" }, svg);
    el("text", { x: M.l - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#57606a" }, svg).textContent = v.toFixed(2);
  }
  for (const t of ticks(t0, t1 + step)) {
    el("line", { x1: x(t - step / 2), x2: x(t - step / 2), y1: H - M.b, y2: H - M.b + 4, stroke: "#8c959f" }, svg);
    el("text", { x: x(t - step / 2), y: H - 12, "text-anchor": "middle", "font-size": 11, fill: "#57606a" }, svg)
      .textContent = tickLabel(t, t1 - t0);
  }
  // alerts: a dashed line at the time they opened
  for (const a of alerts) {
    const t = Date.parse(a.opened_at);
    if (t < t0 || t > t1 + step) continue;
    const ax = x(t - step / 2);
    el("line", { x1: ax, x2: ax, y1: M.t, y2: H - M.b, stroke: "#cf222e", "stroke-dasharray": "4 3" }, svg);
    const mark = el("path", { d: `M${ax - 6},${M.t} L${ax + 6},${M.t} L${ax},${M.t + 10} Z`, fill: "#cf222e", class: "alert-mark" }, svg);
    el("title", {}, mark).textContent = a.message;
  }
  // evaluator epochs: where one evaluator gave way to another (a new series, not a drop)
  const epochs = doc.epochs || [];
  for (const e of epochs.slice(1)) {
    const ex = x(Date.parse(e.first_hour));
    el("line", { x1: ex, x2: ex, y1: M.t, y2: H - M.b, stroke: "#6e7781", "stroke-dasharray": "2 4", class: "epoch-mark" }, svg);
  }
  doc.groups.forEach((g, i) => {
    const c = COLORS[i % COLORS.length];
    const label = (g.key === null ? "(none)" : g.key) + (epochs.length > 1 ? ` @${g.epoch}` : "");
    const item = document.createElement("span");
    item.style.setProperty("--c", c);
    // ESS: the effective sample size of the 1/p-weighted mean (= n when every p is 1).
    // A cascade rubric's numbers name their estimator (ppi++, hajek or all-records).
    const est = (v) => (v && v.estimator ? `, ${v.estimator}` : "");
    item.textContent = `${label} — mean ${g.total.mean.toFixed(3)} (n=${g.total.count}, ESS=${g.total.ess.toFixed(1)}${est(g.total)})`;
    $("legend").appendChild(item);
    const bs = g.buckets.map((b) => ({ ...b, t: Date.parse(b.start) }));
    // One bucket is drawn across its width, so a lone hour still reads as a line and band.
    const xs = bs.length === 1 ? [bs[0].t - step / 2, bs[0].t + step / 2] : null;
    const pts = xs ? xs.map((t) => ({ ...bs[0], t })) : bs;
    const up = pts.map((b) => `${x(b.t).toFixed(1)},${y(b.ci_high).toFixed(1)}`);
    const down = pts.slice().reverse().map((b) => `${x(b.t).toFixed(1)},${y(b.ci_low).toFixed(1)}`);
    el("path", { d: `M${up.concat(down).join(" L")} Z`, fill: c, "fill-opacity": 0.15, stroke: "none", class: "band" }, svg);
    const line = pts.map((b) => `${x(b.t).toFixed(1)},${y(b.mean).toFixed(1)}`).join(" L");
    el("path", { d: `M${line}`, fill: "none", stroke: c, "stroke-width": 2, class: "line", "data-points": pts.length }, svg);
    for (const b of bs) {
      const dot = el("circle", { cx: x(b.t), cy: y(b.mean), r: 5, fill: c, class: "point", style: "cursor:pointer" }, svg);
      el("title", {}, dot).textContent = `${label} ${b.start}: mean ${b.mean.toFixed(3)} [${b.ci_low.toFixed(3)}, ${b.ci_high.toFixed(3)}] (${Math.round((b.ci_level ?? 0.95) * 100)}% CI), n=${b.count}, ESS=${b.ess.toFixed(1)}${est(b)}`;
      dot.addEventListener("click", () => worst(doc, g.key, b.t, step));
    }
  });
  const list = $("alerts");
  list.replaceChildren();
  if (!alerts.length) list.textContent = "none in range";
  for (const a of alerts) {
    const div = document.createElement("div");
    div.className = a.status === "open" ? "alert" : "muted";
    div.textContent = `[${a.status}] ${a.opened_at.slice(0, 16)} ${a.message}`;
    list.appendChild(div);
  }
}

async function worst(doc, key, t, step) {
  const q = { rubric: doc.rubric, by: doc.by, start: new Date(t).toISOString(), end: new Date(t + step).toISOString() };
  if (key !== null) q.key = key;
  $("cell").textContent = `${key === null ? "(none)" : key}, ${q.start.slice(0, 16)} – ${q.end.slice(0, 16)}`;
  const body = await getJSON("api/worst", q);
  const tbody = $("worst").querySelector("tbody");
  tbody.replaceChildren();
  for (const tr of body.traces) {
    const row = document.createElement("tr");
    for (const v of [tr.trace_id, tr.span_id, tr.score.toFixed(3), tr.created_at.slice(0, 19), tr.explanation]) {
      const td = document.createElement("td");
      td.textContent = v;
      row.appendChild(td);
    }
    tbody.appendChild(row);
  }
}

// The review queue (GET api/review, the function behind `evaluator review next`).
async function reviewRows(rubric) {
  const body = await getJSON("api/review", rubric ? { rubric, n: 20 } : { n: 20 });
  const tbody = $("review").querySelector("tbody");
  tbody.replaceChildren();
  if (!body.queue.length) {
    const row = document.createElement("tr"), td = document.createElement("td");
    td.colSpan = 5;
    td.className = "muted";
    td.textContent = "nothing to review: no uncertain, disputed or alerted trace without a label";
    row.appendChild(td);
    tbody.appendChild(row);
  }
  for (const item of body.queue) {
    const row = document.createElement("tr");
    row.className = "review-row";
    row.dataset.trace = item.trace_id;
    const score = item.score === null ? "–" : item.score.toFixed(3);
    for (const v of [item.trace_id, item.rubric, score, item.priority.toFixed(2), item.reasons.join("; ")]) {
      const td = document.createElement("td");
      td.textContent = v;
      row.appendChild(td);
    }
    tbody.appendChild(row);
  }
}

// A cascade rubric's certifications (GET api/certifications, as `evaluator certify --json`).
async function certRows(rubric) {
  const tbody = $("certs").querySelector("tbody");
  let rows, note = "none: the judge decides every sampled trace";
  try {
    const data = await getJSON("api/certifications", { rubric });
    rows = data.certifications;
    // No judge: a cascade's verdicts are advisory and nothing can be certified.
    note = data.advisory ? "advisory: " + data.advisory : (data.uncertified || note);
  } catch (err) {
    rows = [];
    note = "unavailable: " + err.message;
  }
  tbody.replaceChildren();
  // P(fail | passed locally): an upper bound, at its stated confidence (joint with the miss bound).
  const failBound = (c) => c.fail_given_pass_upper === null || c.fail_given_pass_upper === undefined
    ? "–" : `${pct(c.fail_given_pass_upper)}` + (c.fail_given_pass_confidence ? ` (${pct(c.fail_given_pass_confidence)})` : "");
  const cells = rows.length ? rows.map((c) => [c.stratum, c.prompt_version || "any",
    c.status + (c.withdrawn_reason ? `: ${c.withdrawn_reason}` : ""),
    c.threshold === null ? "–" : c.threshold.toFixed(3), c.guarantee || "–", pct(c.decided_share),
    failBound(c), String(c.saved_judge_calls)]) : [[note]];
  for (const values of cells) {
    const row = document.createElement("tr");
    row.className = rows.length ? "cert-row" : "muted";
    for (const v of values) {
      const td = document.createElement("td");
      td.textContent = v;
      if (values.length === 1) td.colSpan = 8;
      row.appendChild(td);
    }
    tbody.appendChild(row);
  }
}

async function init() {
  const qs = new URLSearchParams(location.search);
  const [{ rubrics }, over] = await Promise.all([getJSON("api/rubrics", {}), getJSON("api/overview", {})]);
  const wanted = qs.get("rubric");
  const names = wanted && !rubrics.includes(wanted) ? [wanted, ...rubrics] : rubrics;
  for (const name of names) {
    const opt = document.createElement("option");
    opt.textContent = name;
    $("rubric").appendChild(opt);
  }
  overviewRows(over);
  costRows(await getJSON("api/cost", { since: qs.get("since") || "7d" }));
  for (const k of ["rubric", "by", "since", "bucket"]) if (qs.get(k)) $(k).value = qs.get(k);
  // Less than a day of data: hourly buckets over the last day, so the line has points.
  const first = over.rubrics.find((r) => r.rubric === $("rubric").value)?.first_record_at;
  if (first && !qs.get("bucket") && Date.parse(over.until) - Date.parse(first) < DAY) {
    $("bucket").value = "1h";
    if (!qs.get("since")) $("since").value = "1d";
  }
  $("controls").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  await load();
  if (qs.get("click") === "1") {  // for screenshots: open the last point's worst traces
    const points = document.querySelectorAll("circle.point");
    points[points.length - 1]?.dispatchEvent(new MouseEvent("click"));
  }
}
init().catch((err) => { $("status").textContent = "error: " + err.message; });
