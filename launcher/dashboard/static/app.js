// rtrain's dashboard: plain JavaScript on the JSON API the page is served with, charts by uPlot.
// The token comes in the URL `rtrain ui` printed; the server also sets it as a SameSite=Strict
// cookie, which carries it on this page's own requests.
"use strict";

const POLL_MS = 1000;
const page = document.body.dataset.page;
const params = new URLSearchParams(location.search);

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function age(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function money(job) {
  const v = job.cost_so_far_usd ?? job.cost_usd;
  if (v === null || v === undefined) return "";
  return (job.status === "running" ? "~$" : "$") + Number(v).toFixed(2);
}

function stamp() {
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function statusCell(status) {
  return el("span", { class: `status ${status}` }, status);
}

// the list ------------------------------------------------------------------------------------

async function drawList() {
  const jobs = (await api("/api/jobs")).slice().reverse(); // newest first
  const body = document.querySelector("#jobs tbody");
  const checked = new Set([...body.querySelectorAll("input:checked")].map((box) => box.value));
  body.replaceChildren(...jobs.map((job) => {
    const box = el("input", { type: "checkbox", value: job.job_id });
    box.checked = checked.has(job.job_id);
    box.addEventListener("change", compareState);
    const steps = job.total_steps ? `${job.steps ?? 0}/${job.total_steps}` : (job.steps ?? "");
    const loss = job.last_loss === null || job.last_loss === undefined ? "" : Number(job.last_loss).toFixed(4);
    return el("tr", { "data-job": job.job_id }, el("td", {}, box),
      el("td", {}, el("a", { href: `/job/${encodeURIComponent(job.job_id)}` }, job.job_id)),
      el("td", {}, job.name || ""), el("td", {}, statusCell(job.status)), el("td", {}, job.backend),
      el("td", {}, job.gpu || ""), el("td", {}, steps), el("td", {}, loss), el("td", {}, money(job)),
      el("td", {}, age(job.created_at)));
  }));
  document.getElementById("empty").hidden = jobs.length > 0;
  compareState();
  stamp();
}

function compareState() {
  const picked = [...document.querySelectorAll("#jobs tbody input:checked")].map((box) => box.value);
  const button = document.getElementById("compare");
  button.disabled = picked.length < 2;
  button.onclick = () => { location.href = `/compare?ids=${picked.map(encodeURIComponent).join(",")}`; };
}

// one job ------------------------------------------------------------------------------------

const job = { id: decodeURIComponent(location.pathname.split("/").pop()), trainer: [], chart: null, lr: null };

function series(events) {
  const steps = events.filter((e) => e.event === "step");
  const evals = new Map(events.filter((e) => e.event === "eval").map((e) => [e.step, e.eval_loss]));
  const xs = [...new Set([...steps.map((e) => e.step), ...evals.keys()])].sort((a, b) => a - b);
  const loss = new Map(steps.map((e) => [e.step, e.loss]));
  const lr = new Map(steps.map((e) => [e.step, e.lr]));
  return {
    loss: [xs, xs.map((x) => loss.get(x) ?? null), xs.map((x) => evals.get(x) ?? null)],
    lr: [xs, xs.map((x) => lr.get(x) ?? null)],
    last: steps[steps.length - 1],
  };
}

function chart(target, names, data, old, yfmt) {
  if (old) { old.setData(data); return old; }
  const colors = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#bf3989"];
  const opts = {
    width: Math.max(320, target.clientWidth - 4), height: 260,
    scales: { x: { time: false } },
    axes: [{}, yfmt ? { values: (u, vals) => vals.map(yfmt), size: 70 } : {}],
    series: [{ label: "step" }, ...names.map((label, i) => ({ label, stroke: colors[i % colors.length], width: 2,
      spanGaps: true, points: { show: label === "eval loss" } }))],
  };
  return new uPlot(opts, data, target);
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  s = Math.round(s);
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min` : `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

async function drawJob() {
  const data = await api(`/api/jobs/${encodeURIComponent(job.id)}?since=${job.trainer.length}`);
  job.trainer.push(...data.trainer);
  const s = series(job.trainer);
  document.getElementById("job-id").textContent = data.job_id + (data.name ? ` (${data.name})` : "");
  document.getElementById("status").replaceChildren(statusCell(data.status));
  document.getElementById("step").textContent = s.last ? `${s.last.step}/${s.last.total_steps}` : (data.steps ?? "");
  document.getElementById("loss").textContent = s.last ? Number(s.last.loss).toFixed(4) : "";
  document.getElementById("tps").textContent = s.last && s.last.tokens_per_s ? Math.round(s.last.tokens_per_s).toLocaleString() : "";
  document.getElementById("eta").textContent = data.status === "running" && s.last ? seconds(s.last.eta_s) : "";
  document.getElementById("cost").textContent = money(data);
  const estimate = data.events.find((e) => e.kind === "estimate");
  document.getElementById("estimate").textContent = estimate ? estimate.message
    : (data.backend === "local" ? "this machine: nothing billed" : "");
  job.chart = chart(document.getElementById("loss-chart"), ["loss", "eval loss"], s.loss, job.chart);
  job.lr = chart(document.getElementById("lr-chart"), ["learning rate"], s.lr, job.lr, (v) => v.toPrecision(3));
  window.rtrainCharts = { loss: job.chart, lr: job.lr };
  const outputs = [];
  if (data.adapter_dir) outputs.push(`adapter: ${data.adapter_dir}`);
  if (data.output_dir) outputs.push(`outputs: ${data.output_dir}`);
  for (const e of job.trainer.filter((x) => x.event === "done")) {
    for (const [name, path] of Object.entries(e.exports || {})) outputs.push(`${name}: ${path}`);
  }
  document.getElementById("outputs").replaceChildren(...outputs.map((o) => el("li", {}, o)));
  document.getElementById("events").replaceChildren(...data.events.map((e) =>
    el("li", {}, `${new Date(e.ts * 1000).toLocaleTimeString()}  ${e.kind}  ${e.message}`)));
  const stop = document.getElementById("stop");
  stop.hidden = data.status !== "running";
  stamp();
}

async function stopJob() {
  if (!confirm(`Stop job ${job.id}? Its machine is terminated (as \`rtrain down ${job.id}\` does).`)) return;
  const button = document.getElementById("stop");
  button.disabled = true;
  button.textContent = "Stopping...";
  try {
    await api(`/api/jobs/${encodeURIComponent(job.id)}/stop`, { method: "POST" });
  } catch (error) {
    alert(`Not stopped: ${error.message}`);
  }
  button.disabled = false;
  button.textContent = "Stop";
  await drawJob();
}

// compare ------------------------------------------------------------------------------------

const compare = { chart: null };

async function drawCompare() {
  const ids = (params.get("ids") || "").split(",").filter(Boolean);
  const jobs = await Promise.all(ids.map((id) => api(`/api/jobs/${encodeURIComponent(id)}`)));
  const perJob = jobs.map((j) => new Map(j.trainer.filter((e) => e.event === "step").map((e) => [e.step, e.loss])));
  const xs = [...new Set(perJob.flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
  const data = [xs, ...perJob.map((m) => xs.map((x) => m.get(x) ?? null))];
  const names = jobs.map((j) => j.name ? `${j.job_id} (${j.name})` : j.job_id);
  if (compare.chart && compare.chart.series.length !== names.length + 1) { compare.chart.destroy(); compare.chart = null; }
  compare.chart = chart(document.getElementById("compare-chart"), names, data, compare.chart);
  window.rtrainCharts = { compare: compare.chart };
  document.getElementById("legend").replaceChildren(...jobs.map((j) =>
    el("li", {}, el("a", { href: `/job/${encodeURIComponent(j.job_id)}` }, j.job_id), ` ${j.status}`)));
  stamp();
}

// polling: each page redraws from the API every second, so a job started anywhere grows live --

function poll(draw) {
  const tick = async () => {
    try { await draw(); } catch (error) { document.getElementById("updated").textContent = `error: ${error.message}`; }
    setTimeout(tick, POLL_MS);
  };
  tick();
}

if (page === "index") poll(drawList);
if (page === "job") { document.getElementById("stop").addEventListener("click", stopJob); poll(drawJob); }
if (page === "compare") poll(drawCompare);
