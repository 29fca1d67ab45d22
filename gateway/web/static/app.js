// The technician's page: everything drawn from /api/status, /api/history and /api/live.
// Everything is written with textContent: nothing from the network is ever parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const entries = (o) => Object.entries(o || {});
const sum = (o) => entries(o).reduce((n, [, v]) => n + (typeof v === "number" ? v : sum(v)), 0);
const perKind = (o) => entries(o).map(([k, v]) => `${k} ${typeof v === "number" ? v : sum(v)}`).join(", ");

// Packet-forwarder terms a technician meets in the radio table.
const TERMS = {
  rxnb: "radio packets received (rxnb), including bad CRC",
  rxok: "radio packets received with a correct CRC (rxok)",
  rxfw: "radio packets forwarded (rxfw)",
  ackr: "share of upstream datagrams the server acknowledged (ackr, %)",
  dwnb: "downlink datagrams received (dwnb)",
  txnb: "packets emitted (txnb)",
  temp: "concentrator temperature (temp, °C)",
};
const UNITS = { ackr: " %", temp: " °C" };

// a table of [key, value, class, tooltip] rows
function rows(el, list) {
  $(el).replaceChildren(...list.map(([k, v, cls, tip]) => {
    const tr = document.createElement("tr");
    const a = document.createElement("td"); a.textContent = t(k); if (tip) a.title = tip;
    const b = document.createElement("td"); b.textContent = v; if (cls) b.className = cls;
    tr.append(a, b); return tr;
  }));
}

function age(s) {
  if (s == null) return "-";
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
const ago = (s) => (s == null ? "never" : `${age(s)} ago`);
function secondsSince(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : Math.max(0, (Date.now() - t) / 1000);
}
// local time in the technician's (the gateway's) time zone, with the zone named
const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone;
function localTime(when) {
  if (when == null) return "-";
  const d = typeof when === "number" ? new Date(when * 1000) : new Date(when);
  if (Number.isNaN(d.getTime())) return String(when);
  const sameDay = d.toDateString() === new Date().toDateString();
  return d.toLocaleString(undefined, sameDay ? { hour: "2-digit", minute: "2-digit", second: "2-digit" }
    : { dateStyle: "short", timeStyle: "medium" });
}
const when = (iso) => (iso ? `${localTime(iso)} (${ago(secondsSince(iso))})` : "never");
function mib(b) { return `${(b / 1048576).toFixed(1)} MiB`; }

// rates beside totals: per second over the last refresh
const previous = new Map();
function withRate(key, value, now) {
  const before = previous.get(key);
  previous.set(key, [value, now]);
  if (!before || now <= before[1] || typeof value !== "number") return `${value}`;
  const rate = (value - before[0]) / ((now - before[1]) / 1000);
  return `${value} (${rate >= 10 ? rate.toFixed(0) : rate.toFixed(1)}/s)`;
}

// ------------------------------------------------------------------ the session

let csrfToken = null;
// says "the page asks": a lost session then gets a plain 401 (back to the login form), not
// the browser's Basic dialog meant for scripts
const PAGE = { "X-Schwebe-Page": "1" };
async function loadSession() {
  try {
    const r = await fetch("/api/session", { cache: "no-store", headers: PAGE });
    if (!r.ok) return;
    const s = await r.json();
    csrfToken = s.csrf_token;
    if (s.via === "session") {
      $("who-name").textContent = `${s.user} (${s.role})`;
      $("who").hidden = false;
      $("tech-box").hidden = !["technician", "operator"].includes(s.role);
    }
  } catch (e) { /* the status refresh reports an unreachable gateway */ }
}
$("logout").addEventListener("click", async () => {
  await fetch("/logout", { method: "POST", headers: { ...PAGE, "X-CSRF-Token": csrfToken || "" } });
  location.assign("/login");
});

// ------------------------------------------------------------------ status tables

function alerts(s) {
  const out = [];
  const b = s.buffer || {};
  for (const ev of b.recovery_events || [])
    out.push([`buffer store ${ev.kind}`, `${ev.time}: ${ev.records_lost} records lost` +
      `${ev.records_recovered != null ? `, ${ev.records_recovered} recovered` : ""}, old store kept at ${ev.moved_to}`]);
  for (const [reason, per] of entries(b.drops)) out.push([`buffer dropped (${reason})`, perKind(per)]);
  if (sum(b.write_errors)) out.push(["buffer write errors", `${perKind(b.write_errors)}; last: ${b.last_write_error ?? "-"}`]);
  for (const [n, f] of entries(s.forwarders))
    if (!f.connected) out.push([`forwarder ${n} down`, f.last_error || "not connected yet"]);
  for (const [n, c] of entries(s.components))
    if (!c.running) out.push([`component ${n} stopped`, c.last_error || ""]);
  for (const [n, src] of entries(s.sources)) {
    if (sum(src.malformed)) out.push([`${n}: malformed datagrams`, perKind(src.malformed)]);
    for (const u of src.units || [])
      if (u.status === "unknown") out.push([`wired unit ${u.unit} silent`, `${u.spot_id}: ${u.last_error || "no answer"}`]);
  }
  const unknown = entries(s.parking?.spots).filter(([, sp]) => sp.status === "unknown").length;
  if (unknown) out.push(["spots unknown", `${unknown} (sensor silent or never heard)`]);
  return out.map(([k, v]) => [k, v, "bad"]);
}

function radio(s, now) {
  const out = [];
  for (const [n, src] of entries(s.sources)) {
    if (!src.gateways) continue;
    out.push([n, `${src.bound} · datagrams ${withRate(n + "/dg", src.datagrams, now)} · rxpk ${src.rxpk}`]);
    for (const [eui, g] of entries(s.sources[n].gateways)) {
      const st = g.stat || {};
      const stale = g.last_seen_s_ago == null || g.last_seen_s_ago > 120;
      out.push([`concentrator ${eui}`, `seen ${ago(g.last_seen_s_ago)} · rxpk ${withRate(eui + "/rxpk", g.rxpk, now)} (bad ${g.rxpk_bad})`, stale ? "bad" : "ok"]);
      for (const k of Object.keys(TERMS))
        if (st[k] != null) out.push([`  ${k}`, `${k} ${st[k]}${UNITS[k] || ""}`, "", TERMS[k]]);
    }
    const dl = src.downlinks || {};
    out.push(["downlinks", `sent ${dl.sent ?? 0} · refused ${sum(dl.refused)} · acked ${sum(dl.acked)}`, sum(dl.refused) ? "bad" : ""]);
    // EU868 airtime per gateway (radio) and sub-band: only the bands in use
    for (const [eui, bands] of entries(src.duty_cycle))
      for (const band of bands || [])
        if (band.used_s > 0) out.push([`duty cycle ${eui} ${band.band}`, `${(100 * band.used_s / band.allowance_s).toFixed(1)} % of ${band.allowance_s} s/h`, "", "airtime used in the last hour against the band's legal allowance"]);
  }
  return out.length ? out : [["packet forwarder", "no source configured"]];
}

function buffer(b) {
  const out = [
    ["records", `${b.records ?? 0} (${b.pending_records ?? 0} not yet on flash)`],
    ["size", b.max_bytes ? `${mib(b.bytes)} of ${mib(b.max_bytes)} (${(100 * b.bytes / b.max_bytes).toFixed(1)} %)` : "-"],
    ["last commit", b.last_commit ? when(b.last_commit) : "never", b.last_commit ? "" : "bad"],
  ];
  for (const [k, a] of entries(b.oldest_age_s)) if (a != null) out.push([`oldest ${k}`, age(a)]);
  for (const [n, c] of entries(b.cursors)) out.push([`backlog for ${n}`, `${c.depth_records} records, ${age(c.lag_s)}`, c.depth_records > 1000 ? "bad" : ""]);
  out.push(["dropped", sum(b.drops) ? perKind(b.drops) : "none", sum(b.drops) ? "bad" : "ok"]);
  return out;
}

function remote(rc, up) {
  const box = $("remote-box");
  box.hidden = !rc;
  if (!rc) return;
  box.className = `wide ${rc.state}`;
  const words = {
    none: "no remote configuration received", staged: "new version staged, not applied yet",
    confirming: "applied, waiting for the gateway to confirm it works",
    confirmed: "running the pushed version", "rolled-back": "the pushed version failed; the previous one runs again",
    refused: "a pushed version was refused",
  };
  const bad = rc.state === "refused" || rc.state === "rolled-back";
  const list = [
    ["state", `${rc.state}: ${words[rc.state] || ""}`, bad ? "bad" : rc.state === "confirmed" ? "ok" : ""],
    ["version", rc.version == null ? "none" : String(rc.version)],
  ];
  const running = rc.last_confirmed ?? rc.running;  // the last confirmed version runs
  if (running != null && running !== rc.version) list.push(["running", `version ${running}`]);
  else if (running == null && bad) list.push(["running", "the on-site configuration"]);
  if (rc.reason) list.push(["reason", rc.reason, bad ? "bad" : ""]);
  if (rc.source) list.push(["source", rc.source]);
  // self-update: the release that runs, one on trial, the last outcome (README "Updating")
  if (up && up.enabled) {
    const last = up.outcome ? `; ${up.version} ${up.outcome}${up.reason ? `: ${up.reason}` : ""}` : "";
    list.push(["software", `${up.running}${up.trying ? ` (trying ${up.trying})` : ""}${last}`,
      up.outcome === "rolled-back" || up.outcome === "refused" ? "bad" : ""]);
  }
  rows("remote", list);
}

// ------------------------------------------------------------------ parking grid

const STATUSES = ["free", "occupied", "unknown", "closed"];
let selectedSpot = null;
let lastSpots = {};

function siteOf(id, sp) {
  if (sp.parking_site) return sp.parking_site;
  const cut = id.lastIndexOf(":");
  return cut > 0 ? id.slice(0, cut) : "spots";
}
const countText = (c) => STATUSES.filter((k) => c[k]).map((k) => `${k} ${c[k]}`).join(" · ") || "none";

function grid(spots) {
  lastSpots = spots;
  const sites = new Map();
  const all = {};
  for (const [id, sp] of entries(spots)) {
    const site = siteOf(id, sp);
    if (!sites.has(site)) sites.set(site, []);
    sites.get(site).push([id, sp]);
    all[sp.status] = (all[sp.status] || 0) + 1;
  }
  rows("spot-summary", [["all sites", countText(all), all.unknown ? "bad" : ""]]);
  const blocks = [...sites.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([site, list]) => {
    const counts = {};
    for (const [, sp] of list) counts[sp.status] = (counts[sp.status] || 0) + 1;
    const div = document.createElement("div"); div.className = "site";
    const h = document.createElement("h3");
    const name = document.createElement("span"); name.textContent = site;
    const c = document.createElement("span"); c.className = "counts"; c.textContent = countText(counts);
    h.append(name, c);
    const tiles = document.createElement("div"); tiles.className = "tiles";
    list.sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true }));
    tiles.append(...list.map(([id, sp]) => {
      const t = document.createElement("button");
      t.type = "button";
      t.className = `tile ${sp.status}${id === selectedSpot ? " selected" : ""}`;
      t.textContent = id.slice(id.lastIndexOf(":") + 1).slice(-4);
      t.title = `${id}: ${sp.status}`;
      t.setAttribute("aria-label", `${id}: ${sp.status}`);
      t.dataset.spot = id;
      return t;
    }));
    div.append(h, tiles);
    return div;
  });
  $("spots").replaceChildren(...blocks);
  if (selectedSpot) details(selectedSpot);
}

function details(id) {
  const sp = lastSpots[id];
  if (!sp) { $("spot-details").hidden = true; return; }
  $("spot-details").hidden = false;
  $("spot-details-title").textContent = `${id}: ${sp.status}`;
  const hb = secondsSince(sp.last_heartbeat);
  rows("spot-details-table", [
    ["status", sp.status, sp.status === "unknown" ? "bad" : ""],
    ["last change", when(sp.changed_at)],
    ["heard from sensor", sp.last_heartbeat ? ago(hb) : "never", sp.status === "unknown" ? "bad" : ""],
    ["battery", sp.battery != null ? `${sp.battery} ${sp.battery_unit || ""}`.trim() : "-"],
    ["signal", sp.rssi != null ? `RSSI ${sp.rssi} dBm · SNR ${sp.snr ?? "-"} dB` : "-", "", "at the gateway, last uplink"],
    ["device", sp.device || "-", "", "DevEUI (LoRaWAN) or wired unit"],
    ["site", siteOf(id, sp)],
  ]);
  const btn = $("spot-close");
  btn.hidden = $("tech-box").hidden;  // technicians and operators only
  btn.textContent = t(sp.status === "closed" ? "Reopen spot" : "Close spot");
  btn.onclick = async () => {
    const closing = sp.status !== "closed";
    if (!confirm(`${closing ? "Close" : "Reopen"} ${id}?`)) return;
    try {
      await action("/api/actions/spot", { spot: id, closed: closing });
      await refresh();
    } catch (e) { alert(e.message); }
  };
}

$("spots").addEventListener("click", (ev) => {
  const tile = ev.target.closest(".tile");
  if (!tile) return;
  selectedSpot = selectedSpot === tile.dataset.spot ? null : tile.dataset.spot;
  for (const t of document.querySelectorAll(".tile")) t.classList.toggle("selected", t.dataset.spot === selectedSpot);
  if (selectedSpot) details(selectedSpot); else $("spot-details").hidden = true;
});

// ------------------------------------------------------------------ refresh

async function refresh() {
  try {
    const r = await fetch("/api/status", { cache: "no-store", headers: PAGE });
    if (r.status === 401) { location.assign("/login"); return; }
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    const now = Date.now();
    $("eui").textContent = s.gateway.eui;
    const v = s.verdict || { state: s.healthy ? "ok" : "failing", reasons: [] };
    $("summary").textContent =
      `up ${age(s.gateway.uptime_s)} · parser ${s.gateway.parser} · ${t(v.state === "ok" ? "healthy" : v.state)} · ${localTime(now / 1000)} ${TZ}`;
    $("verdict-box").className = `wide ${v.state}`;
    $("verdict").textContent =
      t({ ok: "OK: data flows", degraded: "DEGRADED: works, but needs a look", failing: "FAILING: act now" }[v.state] || v.state);
    $("verdict-reasons").replaceChildren(...v.reasons.map((reason) => {
      const li = document.createElement("li");
      const what = document.createElement("strong");
      const [problem, todoText] = reasonText(reason);
      what.textContent = `${reason.component}: ${problem}`;
      const todo = document.createElement("span");
      todo.className = "action";
      todo.textContent = "→ " + todoText;
      li.append(what, todo);
      return li;
    }));
    remote(s.remote_config, s.update);
    const a = alerts(s);
    $("alerts-box").hidden = a.length === 0;
    rows("alerts", a);
    rows("traffic", entries(s.counters).filter(([, x]) => typeof x === "number")
      .map(([k, x]) => [k, withRate("c/" + k, x, now)]));
    rows("radio", radio(s, now));
    rows("buffer", buffer(s.buffer || {}));
    rows("forwarders", entries(s.forwarders).map(([n, f]) =>
      [n, `${f.connected ? "connected" : "DOWN"} · acked ${withRate("f/" + n, f.acked ?? 0, now)} · lag ${f.lag_records ?? "?"} records${f.lag_s != null ? ", " + age(f.lag_s) : ""}`, f.connected ? "ok" : "bad"]));
    grid(s.parking?.spots || {});
    restartChoices(s.forwarders);
    const counters = entries(s.parking?.counters);
    $("counters-box").hidden = counters.length === 0;
    rows("counters", counters.map(([id, c]) =>
      [id, `${c.count ?? "no count yet"} cars counted · heard ${c.last_heard ? ago(secondsSince(c.last_heard)) : "never"}` +
           `${c.battery != null ? " · battery " + c.battery + " " + (c.battery_unit || "") : ""}`, ""]));
    const units = entries(s.sources).flatMap(([, src]) => src.units || []);
    rows("wired", units.length ? units.map((u) => [`unit ${u.unit} · ${u.spot_id}`,
      `${u.status ?? "?"} · ok ${ago(u.seconds_since_ok)} · crc ${u.crc_errors} · timeouts ${u.timeouts}`, u.status === "unknown" ? "bad" : ""])
      : [["RS-485", "not configured"]]);
    const g = s.gnss;
    rows("gnss", g ? [["fix", g.valid ? `quality ${g.fix_quality}, ${g.satellites} satellites` : "no fix", g.valid ? "ok" : "bad"],
                      ["position", g.lat != null ? `${g.lat.toFixed(5)}°, ${g.lon.toFixed(5)}°` : "-"],
                      ["clock offset", g.time_offset != null ? `${g.time_offset.toFixed(3)} s` : "-", "", "gateway clock minus GNSS time"]]
                  : [["receiver", "not configured"]]);
    rows("components", entries(s.components).map(([n, c]) =>
      [n, `${c.running ? "running" : "stopped"}${c.restarts ? " · restarts " + c.restarts : ""}`, c.running ? "ok" : "bad"]));
  } catch (e) {
    $("summary").textContent = "cannot reach the gateway: " + e.message;
  }
}

// ------------------------------------------------------------------ pictures (uPlot)

const charts = {};
const PALETTE = ["#1565c0", "#b00020", "#0a7a2f", "#c77700", "#6a1b9a", "#00838f", "#5d4037", "#37474f"];
function chartWidth(el) { return Math.max(200, el.clientWidth || 300); }

function lineChart(id, t, series, unit) {
  const el = $(id);
  const names = Object.keys(series);
  if (!t.length || !names.length) {
    el.textContent = t("no data yet");
    delete charts[id];
    return;
  }
  const data = [t, ...names.map((n) => series[n])];
  const key = names.join("|");
  const c = charts[id];
  if (c && c.key === key) { c.plot.setData(data); return; }
  el.replaceChildren();
  const plot = new uPlot({
    width: chartWidth(el), height: 150,
    series: [{}, ...names.map((n, i) => ({ label: n, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: false,
      value: (u, x) => (x == null ? "-" : `${x} ${unit}`) }))],
    axes: [{}, { size: 45 }],
    scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
  }, data, el);
  charts[id] = { key, plot };
}

function radioChart(points) {
  const el = $("chart-radio");
  if (!points.length) { el.textContent = "no uplinks sampled yet"; delete charts.radio; return; }
  const sfs = [...new Set(points.map((p) => p.sf))].sort((a, b) => a - b);
  // uPlot wants one x array: SNR on x, one RSSI series per SF (null where another SF's point)
  const sorted = [...points].sort((a, b) => a.snr - b.snr);
  const xs = sorted.map((p) => p.snr);
  const data = [xs, ...sfs.map((sf) => sorted.map((p) => (p.sf === sf ? p.rssi : null)))];
  const key = sfs.join("|");
  const c = charts.radio;
  if (c && c.key === key) { c.plot.setData(data); return; }
  el.replaceChildren();
  const plot = new uPlot({
    width: chartWidth(el), height: 170, mode: 1,
    scales: { x: { time: false } },
    axes: [{ label: "SNR dB" }, { label: "RSSI dBm", size: 50 }],
    series: [{ label: "SNR dB" }, ...sfs.map((sf, i) => ({
      label: `SF${sf}`, stroke: PALETTE[i % PALETTE.length], width: 0, paths: () => null,
      points: { show: true, size: 5, fill: PALETTE[i % PALETTE.length] } }))],
  }, data, el);
  charts.radio = { key, plot };
}

async function pictures() {
  if (typeof uPlot === "undefined") return;
  try {
    const r = await fetch("/api/history", { cache: "no-store", headers: PAGE });
    if (!r.ok) return;
    const h = await r.json();
    lineChart("chart-frames", h.t, h.frames_per_min, "/min");
    lineChart("chart-buffer", h.t, { records: h.buffer_records }, "records");
    lineChart("chart-lag", h.t, h.forwarder_lag_s, "s");
    lineChart("chart-airtime", h.t, h.airtime_pct || {}, "%");
    radioChart(h.radio);
  } catch (e) { /* the status refresh says the gateway is gone */ }
}

// ------------------------------------------------------------------ live frames (SSE)

const LIVE_ROWS = 100;
let paused = false;
let held = 0;
let source = null;

function liveMatches(ev) {
  const f = $("live-filter").value.trim().toLowerCase().replace(/[^0-9a-f]/g, "");
  if (!f) return true;
  return [ev.dev_addr, ev.dev_eui].some((x) => x && x.toLowerCase().includes(f));
}

function liveRow(ev) {
  const tr = document.createElement("tr");
  const device = ev.dev_addr ? ev.dev_addr : ev.dev_eui ? `EUI ${ev.dev_eui}` : ev.type || "";
  const parking = ev.kind === "parking" ? `${ev.spot}: ${ev.status}` : "";
  const cells = [localTime(ev.t), ev.gateway ? ev.gateway.slice(-6) : "", device, ev.fcnt ?? "", ev.fport ?? "",
    ev.sf ? String(ev.sf).replace(/BW125$/, "") : "", ev.rssi ?? "", ev.snr ?? "", ev.freq != null ? Number(ev.freq).toFixed(1) : "", parking];
  for (const c of cells) { const td = document.createElement("td"); td.textContent = String(c); tr.append(td); }
  tr.dataset.devAddr = ev.dev_addr || "";
  tr.dataset.devEui = ev.dev_eui || "";
  return tr;
}

function liveState() {
  $("live-state").textContent = paused ? `paused (${held} frames not shown)` : source && source.readyState === 1 ? "live" : "reconnecting…";
}

function startLive() {
  source = new EventSource("/api/live");
  source.onopen = liveState;
  source.onerror = liveState;
  source.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (paused) { held += 1; liveState(); return; }
    if (!liveMatches(ev)) return;
    const body = $("live-rows");
    body.prepend(liveRow(ev));
    while (body.children.length > LIVE_ROWS) body.lastChild.remove();
  };
}
$("live-pause").addEventListener("click", () => {
  paused = !paused;
  held = 0;
  $("live-pause").textContent = t(paused ? "Resume" : "Pause");
  liveState();
});
$("live-filter").addEventListener("input", () => {
  for (const tr of $("live-rows").children)
    tr.hidden = !liveMatches({ dev_addr: tr.dataset.devAddr, dev_eui: tr.dataset.devEui });
});

// ------------------------------------------------------------------ technician actions

async function action(path, body) {
  const r = await fetch(path, { method: "POST", headers: { ...PAGE, "X-CSRF-Token": csrfToken || "",
    "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(answer.error || "HTTP " + r.status);
  return answer;
}
$("check").addEventListener("click", async () => {
  if (!confirm("Connect to every backend now (name lookup, TCP, TLS, protocol)?")) return;
  $("check-state").textContent = t("checking…");
  try {
    const { results } = await action("/api/actions/check");
    $("check-state").textContent = `checked ${localTime(Date.now() / 1000)}`;
    rows("check-results", results.flatMap((x) => x.steps.map((st, i) =>
      [i === 0 ? `${x.name} (${x.target})` : "", `${st.ok ? "✓" : "✗"} ${st.step}: ${st.detail} · ${st.ms} ms`,
       st.ok ? "ok" : "bad"])));
  } catch (e) { $("check-state").textContent = "check failed: " + e.message; }
});
$("show-config").addEventListener("click", async () => {
  const pre = $("running-config");
  if (!pre.hidden) { pre.hidden = true; return; }
  const r = await fetch("/api/config/running", { cache: "no-store", headers: PAGE });
  pre.textContent = r.ok ? JSON.stringify(await r.json(), null, 2) : "HTTP " + r.status;
  pre.hidden = false;
});
$("restart").addEventListener("click", async () => {
  const name = $("restart-which").value;
  if (!name || !confirm(`Restart forwarder ${name}? Its connection is closed and opened again.`)) return;
  try {
    await action("/api/actions/restart", { forwarder: name });
    $("check-state").textContent = `forwarder ${name} restarted`;
  } catch (e) { $("check-state").textContent = "restart failed: " + e.message; }
});
function restartChoices(forwarders) {
  const sel = $("restart-which");
  const names = Object.keys(forwarders || {});
  if (sel.options.length === names.length) return;
  sel.replaceChildren(...names.map((n) => { const o = document.createElement("option"); o.textContent = n; return o; }));
}

translatePage();
loadSession();
refresh();
setInterval(refresh, 2000);
pictures();
setInterval(pictures, 10000);
startLive();
