// AutoGit fleet dashboard: polls the admin API (same origin, session cookie)
// and renders agents, pools, pending jobs and recent events. Plain DOM, no
// dependencies; every value from the API is inserted as text, never as HTML.
"use strict";

const REFRESH_MS = 3000;
const TIMEOUT_MS = 10000;
const $ = (id) => document.getElementById(id);

let timer = null;
let paused = false;
let inFlight = false;
let lastOk = null;
let stopped = false; // after a 401: polling again would only repeat it

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, init) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  let res;
  try {
    res = await fetch(path, {
      credentials: "same-origin",
      // X-AutoGit-Request: the coordinator refuses cookie-authenticated
      // changes without it (or JSON); a cross-site no-cors request cannot send it.
      headers: { Accept: "application/json", "X-AutoGit-Request": "1", ...(init && init.body ? { "Content-Type": "application/json" } : {}) },
      signal: ctl.signal,
      ...init,
    });
  } catch (e) {
    throw new ApiError(0, e.name === "AbortError" ? "no answer within 10 s" : "network error");
  } finally {
    clearTimeout(t);
  }
  let body = null;
  try {
    body = await res.json();
  } catch (_) {
    body = null;
  }
  if (!res.ok) {
    const msg = body && typeof body.error === "string" ? body.error : res.statusText;
    throw new ApiError(res.status, msg);
  }
  if (body === null) throw new ApiError(res.status, "the answer is not JSON");
  return body;
}

// ------------------------------------------------------------------ helpers

function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") n.className = v;
    else if (k === "onclick") n.addEventListener("click", v);
    else n.setAttribute(k, v === true ? "" : String(v));
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    n.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return n;
}

const badge = (cls, text, attrs) => el("span", { class: "badge " + cls, ...attrs }, text);
const sub = (...kids) => el("span", { class: "sub" }, ...kids);
const shortId = (id) => (id ? String(id).slice(0, 8) : "");
const tags = (list) => (list && list.length ? el("span", { class: "nowrap" }, list.map((t) => el("span", { class: "tag" }, t))) : el("span", { class: "sub" }, "untagged"));
const archBadge = (arch) => badge("arch", arch || "?", { "data-arch": arch || "" });
const VENDORS = { nvidia: "NVIDIA", amd: "AMD", intel: "Intel" };
const vendorName = (v) => VENDORS[v] || String(v || "GPU");

function bytes(n) {
  if (typeof n !== "number" || !isFinite(n)) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1).replace(/\.0$/, "")) + " " + units[i];
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (!isFinite(s)) return iso;
  if (s < 5) return "just now";
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 129600) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function clock(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return String(iso || "");
  const today = new Date().toDateString() === d.toDateString();
  const t = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  return today ? t : d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + t;
}

const time = (iso, text) => el("time", { datetime: iso, title: iso }, text);

function bar(fraction, label) {
  const pct = Math.max(0, Math.min(100, Math.round(fraction * 100)));
  return el("span", { class: pct >= 90 ? "bar hi" : "bar", role: "img", "aria-label": label }, el("span", { style: "width:" + pct + "%" }));
}

function fillBody(table, rows, cols, emptyText) {
  const tbody = $(table).tBodies[0];
  if (!rows.length) rows = [el("tr", { class: "empty" }, el("td", { colspan: cols }, emptyText))];
  tbody.replaceChildren(...rows);
}

// ------------------------------------------------------------------- agents

function gpuCell(gpus) {
  if (!gpus || !gpus.length) return el("span", { class: "sub" }, "none");
  const groups = new Map();
  for (const g of gpus) {
    const key = g.vendor + "\u0000" + (g.name || "");
    const cur = groups.get(key) || { vendor: g.vendor, name: g.name || "", count: 0, mem: g.memory_bytes };
    cur.count++;
    groups.set(key, cur);
  }
  return [...groups.values()].map((g) =>
    el("div", { "data-gpu-vendor": g.vendor, "data-gpu-count": g.count },
      badge("b-info", vendorName(g.vendor) + " \u00d7 " + g.count),
      sub(g.name, g.mem ? " \u00b7 " + bytes(g.mem) : "")));
}

function stateCell(a) {
  const out = [badge("st-" + a.state, a.state, { "data-state": a.state })];
  if (a.drain && a.drain.drained_at) out.push(badge("b-off", "drained"));
  else if (a.drain) out.push(badge("b-warn", "draining"));
  else if (a.cordoned) out.push(badge("b-warn", "cordoned"));
  if (a.drain && !a.drain.drained_at) out.push(sub("deadline ", time(a.drain.deadline, clock(a.drain.deadline))));
  else out.push(sub("seen ", a.last_seen ? time(a.last_seen, ago(a.last_seen)) : "never"));
  return out;
}

// The caller's role (GET /api/v1/whoami): what it may not do is not shown.
// The server checks every request anyway (403).
let role = "viewer";
const RANK = { viewer: 0, operator: 1, admin: 2 };
function may(needed) { return (RANK[role] ?? 0) >= RANK[needed]; }

function actionsCell(a) {
  if (a.state === "revoked") return el("span", { class: "sub" }, "revoked");
  if (!may("operator")) return el("span", { class: "sub" }, "\u2014");
  const name = a.hostname || shortId(a.id);
  const out = [];
  if (a.cordoned) {
    out.push(el("button", { type: "button", "data-key": a.id + ":cordon", "aria-label": "Uncordon " + name,
      onclick: () => act(a.id, "uncordon", name) }, "Uncordon"));
  } else {
    out.push(el("button", { type: "button", "data-key": a.id + ":cordon", "aria-label": "Cordon " + name,
      onclick: () => act(a.id, "cordon", name) }, "Cordon"));
  }
  if (!a.drain || a.drain.drained_at) {
    out.push(el("button", { type: "button", class: "danger", "data-key": a.id + ":drain", "aria-label": "Drain " + name,
      onclick: () => act(a.id, "drain", name) }, "Drain"));
  }
  return out;
}

// Trust labels: set by operators (join token, here, `agent label set`) and
// the only labels a pool's agent_selector looks at. What the agent reports
// about itself is shown apart, as a claim.
function labelsCell(a) {
  const name = a.hostname || shortId(a.id);
  const live = a.state !== "revoked" && may("admin");
  const out = Object.entries(a.trust_labels || {}).sort().map(([k, v]) =>
    el("span", { class: "tag trust", "data-trust-label": k + "=" + v, title: "Trust label, set by an operator" }, k + "=" + v,
      live ? el("button", { type: "button", "data-key": a.id + ":label-rm:" + k, "aria-label": "Remove trust label " + k + " from " + name,
        onclick: () => relabel(a.id, name, { remove: [k] }) }, "\u00d7") : null));
  if (!out.length) out.push(el("span", { class: "sub", style: "display:inline" }, "no trust labels "));
  if (live) out.push(el("button", { type: "button", "data-key": a.id + ":label-add", "aria-label": "Add a trust label to " + name,
    onclick: () => addLabel(a.id, name) }, "+ label"));
  const reported = Object.entries(a.reported_labels || {}).sort().map(([k, v]) => k + "=" + v).join(", ");
  return el("div", { class: "labels" }, out,
    reported ? el("span", { class: "sub", "data-reported-labels": reported, title: "Reported by the agent itself: not trusted for placement" }, "reports " + reported) : null);
}

async function addLabel(id, name) {
  const s = window.prompt("Trust label for " + name + " (key=value). Pools whose agent_selector asks for it may then place runners there.");
  if (s === null) return;
  const i = s.indexOf("=");
  if (i < 1) {
    notice("bad", "A trust label looks like key=value.");
    return;
  }
  await relabel(id, name, { set: { [s.slice(0, i).trim()]: s.slice(i + 1).trim() } });
}

async function relabel(id, name, body) {
  if (body.remove && !window.confirm("Remove trust label " + body.remove[0] + " from " + name + "? Pools that select it place no new runners there.")) return;
  notice();
  let r;
  try {
    r = await api("/api/v1/agents/" + encodeURIComponent(id) + "/labels", { method: "POST", body: JSON.stringify(body) });
  } catch (e) {
    if (e.status === 401) showError(e);
    else notice("bad", "Could not change the trust labels of " + name + ": " + e.message + ".");
    return;
  }
  const pairs = Object.entries(r.trust_labels || {}).map(([k, v]) => k + "=" + v).join(", ");
  notice("good", "Trust labels of " + name + ": " + (pairs || "none") + ".");
  await refresh();
}

function renderAgents(agents) {
  agents.sort((x, y) => String(x.hostname).localeCompare(String(y.hostname)) || String(x.id).localeCompare(String(y.id)));
  const rows = agents.map((a) => {
    const l = a.load;
    const cpu = l ? [l.cpu_percent.toFixed(0) + " %", bar(l.cpu_percent / 100, "CPU " + l.cpu_percent.toFixed(0) + " percent")] : "\u2014";
    const mem = l && l.mem_total_bytes
      ? [bytes(l.mem_used_bytes) + " / " + bytes(l.mem_total_bytes),
         bar(l.mem_used_bytes / l.mem_total_bytes, "memory " + Math.round((100 * l.mem_used_bytes) / l.mem_total_bytes) + " percent used")]
      : "\u2014";
    const inv = a.inventory;
    return el("tr", { "data-agent-id": a.id, "data-hostname": a.hostname, "data-arch": a.arch, "data-state": a.state },
      el("th", { scope: "row" }, a.hostname, sub(el("code", { title: a.id }, shortId(a.id)),
        inv && inv.cpu_threads ? " \u00b7 " + inv.cpu_threads + " threads" : ""), labelsCell(a)),
      el("td", {}, archBadge(a.arch)),
      el("td", {}, gpuCell(a.gpus)),
      el("td", { class: "mono" }, cpu),
      el("td", { class: "mono" }, mem),
      el("td", {}, stateCell(a)),
      el("td", { class: "num" }, String(a.runners ?? 0), l && l.runner_containers !== (a.runners ?? 0) ? sub(l.runner_containers + " containers") : null),
      el("td", { class: "actions" }, actionsCell(a)));
  });
  fillBody("agents", rows, 8, "No agents enrolled yet: create a join token with `autogit-coordinator token create`.");
  $("agents-n").textContent = "(" + agents.length + ")";
}

// ----------------------------------------------------- pools, jobs, events

function gpuNeed(gpu) {
  if (!gpu) return null;
  const min = gpu.min_memory ? " \u2265 " + (typeof gpu.min_memory === "number" ? bytes(gpu.min_memory) : gpu.min_memory) : "";
  return badge("b-info", vendorName(gpu.vendor) + " \u00d7 " + (gpu.count || 1) + min);
}

function selectorNeed(selector) {
  const pairs = Object.entries(selector || {}).sort().map(([k, v]) => k + "=" + v);
  if (!pairs.length) return null;
  return el("span", { class: "sub", "data-selector": pairs.join(","), title: "agent_selector: only agents with these trust labels" }, "only on " + pairs.join(", "));
}

// The schedule window in force and when that next changes, if the pool has
// a schedule.
function scheduleNote(p) {
  if (!p.schedule || !p.schedule.length) return null;
  const active = p.schedule.filter((w) => w.active).map((w) => w.cron + " (" + w.timezone + ")");
  const text = (active.length ? "window " + active.join("; ") : "no window active") +
    " \u00b7 warm " + p.idle_min +
    (p.next_change ? " \u00b7 changes " + new Date(p.next_change).toLocaleString() : "");
  return el("span", { class: "sub", "data-schedule": active.length ? "active" : "idle" }, text);
}

// The pool's wait objective and the share of its jobs that met it over the
// last hour and day (rounded down, so 100 % means every job; the 1e-9 keeps
// 0.29 * 100 = 28.999… at 29), if it has one.
function objectiveNote(p) {
  const o = p.wait_objective;
  if (!o) return null;
  const share = (met, jobs, span) =>
    jobs ? Math.floor(met * 100 + 1e-9) + " % of " + jobs + (jobs === 1 ? " job" : " jobs") + " in " + span : "no job in " + span;
  const text = "wait \u2264 " + o.target + ": " +
    (o.jobs_24h ? share(o.met_1h, o.jobs_1h, "1 h") + " \u00b7 " + share(o.met_24h, o.jobs_24h, "24 h") : "no job measured yet");
  return el("span", { class: "sub", "data-objective": o.target, title: "wait_objective: share of jobs whose runner took them within " + o.target }, text);
}

function renderPools(pools) {
  const rows = pools.map((p) => {
    let status;
    if (p.unmet_reason) status = [badge("b-warn", "unmet"), sub(el("span", { class: "reason" }, p.unmet_reason))];
    else if (p.demand > 0 || p.running > 0) status = badge("b-ok", "serving");
    else status = badge("b-off", "no demand");
    return el("tr", { "data-pool": p.name },
      el("th", { scope: "row" }, p.name),
      el("td", {}, tags(p.tags)),
      el("td", { class: "nowrap" }, archBadge(p.arch), " ", gpuNeed(p.gpu), selectorNeed(p.agent_selector)),
      el("td", { class: "num" }, String(p.demand)),
      el("td", { class: "num" }, String(p.running)),
      el("td", { class: "num" }, String(p.idle)),
      el("td", { class: "num" }, String(p.max_runners)),
      el("td", {}, status, scheduleNote(p), objectiveNote(p)));
  });
  fillBody("pools", rows, 8, "No pools configured ([[pools]] in coordinator.toml).");
  $("pools-n").textContent = "(" + pools.length + ")";
}

function renderJobs(jobs) {
  const rows = jobs.map((j) =>
    el("tr", { "data-job": j.job_id },
      el("th", { scope: "row" }, "#" + j.job_id, sub((j.name ? j.name + " \u00b7 " : "") + "project " + j.project_id)),
      el("td", {}, tags(j.tags)),
      el("td", {}, j.pool ? j.pool : el("span", { class: "sub" }, "none")),
      el("td", { class: j.reason ? "reason" : "" }, j.reason || (j.pool ? "waiting for a runner" : "no pool matches its tags")),
      el("td", { class: "nowrap" }, time(j.seen_at, ago(j.seen_at)), j.via ? sub("via " + j.via) : null)));
  fillBody("jobs", rows, 5, "No pending jobs.");
  $("jobs-n").textContent = "(" + jobs.length + ")";
}

function detailText(d) {
  if (!d || typeof d !== "object") return d ? String(d) : "";
  const s = Object.entries(d)
    .map(([k, v]) => k + "=" + (typeof v === "string" ? v : JSON.stringify(v)))
    .join(" ");
  return s.length > 140 ? s.slice(0, 139) + "\u2026" : s;
}

function renderEvents(events, agents) {
  const host = new Map(agents.map((a) => [a.id, a.hostname]));
  const who = (id) => (id ? [el("code", { title: id }, shortId(id)), host.has(id) ? " " + host.get(id) : ""] : "\u2014");
  const rows = events.map((e) =>
    el("tr", { "data-event": e.id },
      el("td", { class: "mono" }, time(e.at, clock(e.at))),
      el("th", { scope: "row" }, el("code", {}, e.kind)),
      el("td", {}, e.actor || "\u2014"),
      el("td", {}, who(e.agent_id)),
      el("td", {}, e.runner_id ? el("code", { title: e.runner_id }, shortId(e.runner_id)) : "\u2014"),
      el("td", { class: "detail" }, detailText(e.detail))));
  fillBody("events", rows, 6, "No events yet.");
  $("events-n").textContent = "(latest " + events.length + ")";
}

function renderSummary(agents, pools, jobs) {
  const ready = agents.filter((a) => a.state === "ready").length;
  const gpus = agents.reduce((n, a) => n + (a.gpus ? a.gpus.length : 0), 0);
  const runners = agents.reduce((n, a) => n + (a.runners || 0), 0);
  const unmet = pools.filter((p) => p.unmet_reason).length;
  const item = (n, label, cls) => el("li", { class: cls }, el("strong", {}, String(n)), " " + label);
  const items = [
    item(ready + "/" + agents.length, "agents ready"),
    item(gpus, gpus === 1 ? "GPU" : "GPUs"),
    item(runners, runners === 1 ? "runner" : "runners"),
    item(jobs.length, "pending " + (jobs.length === 1 ? "job" : "jobs")),
  ];
  if (unmet) items.push(item(unmet, "unmet " + (unmet === 1 ? "pool" : "pools"), "reason"));
  $("summary").replaceChildren(...items);
}

// ---------------------------------------------------------------- the loop

function setBanner(...kids) {
  $("banner").replaceChildren(...kids.filter((k) => k !== null));
}

function showError(e) {
  if (e.status === 401) {
    stopped = true;
    setBanner("Not signed in: your session ended, or the admin token was revoked or expired. ",
      el("a", { href: "/" }, "Sign in again"), " with an admin token.");
    document.body.dataset.state = "unauthorized";
  } else if (!(e instanceof ApiError)) {
    setBanner("The dashboard could not show the coordinator's answer (" + e + "). Retrying every 3 s.");
    document.body.dataset.state = "error";
  } else if (e.status === 0) {
    setBanner("Cannot reach the coordinator (" + e.message + "). Retrying every 3 s.");
    document.body.dataset.state = "error";
  } else {
    setBanner("The coordinator answered " + e.status + ": " + e.message + ". Retrying every 3 s.");
    document.body.dataset.state = "error";
  }
  $("updated").textContent = lastOk ? "Last updated " + clock(lastOk.toISOString()) + " (stale)" : "Not loaded";
}

async function refresh() {
  if (inFlight) return;
  inFlight = true;
  clearTimeout(timer);
  try {
    const [me, agents, pools, jobs, events] = await Promise.all([
      api("/api/v1/whoami"),
      api("/api/v1/agents"),
      api("/api/v1/pools"),
      api("/api/v1/jobs"),
      api("/api/v1/events?limit=20"),
    ]);
    role = me.role;
    $("who").textContent = me.actor + " (" + me.role + ")";
    document.body.dataset.role = me.role;
    const focusKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
    renderSummary(agents, pools, jobs);
    renderAgents(agents);
    renderPools(pools);
    renderJobs(jobs);
    renderEvents(events.events || [], agents);
    if (focusKey) {
      const again = document.querySelector('[data-key="' + CSS.escape(focusKey) + '"]');
      if (again) again.focus();
    }
    stopped = false;
    lastOk = new Date();
    setBanner();
    $("updated").textContent = "Updated " + clock(lastOk.toISOString());
    document.body.dataset.state = "ok";
  } catch (e) {
    showError(e);
  } finally {
    inFlight = false;
    schedule();
  }
}

function schedule() {
  clearTimeout(timer);
  if (!paused && !stopped) timer = setTimeout(() => (document.hidden ? schedule() : refresh()), REFRESH_MS);
}

// Outcome of the last cordon/uncordon/drain; stays until dismissed or the
// next action (refreshes do not clear it).
function notice(kind, text) {
  const n = $("notice");
  if (!text) {
    n.className = "";
    n.replaceChildren();
    return;
  }
  n.className = kind;
  n.replaceChildren(text + " ", el("button", { type: "button", onclick: () => notice() }, "Dismiss"));
}

const DONE = { cordon: "Cordoned", uncordon: "Uncordoned", drain: "Draining" };

async function act(id, action, name) {
  if (action === "drain" && !window.confirm("Drain " + name + "? It is cordoned and its runners get one hour to finish their job.")) return;
  notice();
  let r;
  try {
    r = await api("/api/v1/agents/" + encodeURIComponent(id) + "/" + action, { method: "POST", body: "{}" });
  } catch (e) {
    if (e.status === 401) showError(e);
    else notice("bad", "Could not " + action + " " + name + ": " + e.message + ".");
    return;
  }
  let msg = DONE[action] + " " + name + ".";
  if (action === "drain" && r) msg = "Draining " + name + ": " + r.runners_stopping + " runner(s) stopping, at the latest by " + clock(r.deadline) + ".";
  notice("good", msg);
  await refresh();
}

$("signout").addEventListener("click", async () => {
  stopped = true;
  clearTimeout(timer);
  try {
    await api("/logout", { method: "POST" });
  } catch (e) {
    if (e.status !== 401) {
      stopped = false;
      notice("bad", "Sign out failed: " + e.message);
      return;
    }
  }
  location.replace("/");
});
$("refresh").addEventListener("click", () => {
  stopped = false;
  refresh();
});
$("pause").addEventListener("click", (ev) => {
  paused = !paused;
  ev.currentTarget.textContent = paused ? "Resume" : "Pause";
  ev.currentTarget.setAttribute("aria-pressed", String(paused));
  if (paused) clearTimeout(timer);
  else refresh();
});
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && !paused && !stopped) refresh();
});
refresh();
