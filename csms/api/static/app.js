/* evfleet live dashboard: plain JS, no build step. Data from /api/v1, live updates over SSE. */
"use strict";
(function () {
  const GRID_PAGE = 200, SESSION_PAGE = 50, FEED_MAX = 100, DETAIL_REFRESH_MS = 2000;
  const STATUSES = ["Charging", "Available", "Occupied", "Reserved", "Unavailable", "Faulted", "Offline", "Unknown"];
  const S = {
    token: sessionStorage.getItem("evfleet-token") || "", role: "viewer", auth: true,
    stations: new Map(), sessions: new Map(), sites: new Map(), history: new Map(),
    siteId: null, statusFilter: null, query: "", gridPage: 0, sessionPage: 0, now: Date.now(),
    gridDirty: true, dirtyStations: new Set(), sessionsDirty: true, siteDirty: true, newEvents: [],
    route: {name: "overview"}, detailAt: 0, source: null, frame: 0,
  };
  window.evfleetDashboard = S;  // for debugging and browser tests
  const $ = (id) => document.getElementById(id);
  const stationUrl = (id) => "/static/station.html?id=" + encodeURIComponent(id);  // the station page
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
      else if (k === "style") e.style.cssText = v;  // CSSOM: allowed by the strict CSP, an attribute is not
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  const fmt = (v, d = 1) => (v === null || v === undefined || !isFinite(v)) ? "–" : Number(v).toFixed(d);
  function timeOf(iso) {
    const t = Date.parse(iso); if (!isFinite(t)) return "–";
    return new Date(t).toISOString().slice(11, 19);
  }
  function until(iso) {
    const t = Date.parse(iso); if (!isFinite(t)) return "–";
    const min = Math.round((t - S.now) / 60000);
    const hm = min >= 0 ? `in ${Math.floor(min / 60)}h${String(min % 60).padStart(2, "0")}` : "overdue";
    return `${new Date(t).toISOString().slice(11, 16)} (${hm})`;
  }

  // --- API ----------------------------------------------------------------------------
  async function api(path, opts = {}) {
    const headers = Object.assign({"Accept": "application/json"}, opts.headers || {});
    if (S.token) headers["Authorization"] = "Bearer " + S.token;
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {method: opts.method || "GET", headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body)});
    const body = r.status === 204 ? null : await r.json().catch(() => null);
    if (r.status === 401) { showLogin("token rejected: " + (body && body.error ? body.error.message : r.status)); }
    if (!r.ok) { const err = new Error(body && body.error ? body.error.message : `HTTP ${r.status}`); err.status = r.status; throw err; }
    return body;
  }
  async function fetchAll(path, max = 20000) {
    const items = []; let offset = 0;
    while (offset < max) {
      const sep = path.includes("?") ? "&" : "?";
      const page = await api(`${path}${sep}limit=1000&offset=${offset}`);
      items.push(...page.items); offset += page.items.length;
      if (!page.items.length || offset >= page.total) break;
    }
    return items;
  }

  // --- login ------------------------------------------------------------------------
  function showLogin(message) {
    $("login").hidden = false; for (const id of ["overview", "session-view"]) $(id).hidden = true;
    $("login-error").textContent = message || "";
    if (S.source) { S.source.close(); S.source = null; }
  }
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault(); S.token = $("token-input").value.trim();
    sessionStorage.setItem("evfleet-token", S.token); start();
  });
  $("logout").addEventListener("click", () => { sessionStorage.removeItem("evfleet-token"); S.token = ""; showLogin(""); });

  // --- loading ----------------------------------------------------------------------
  async function loadAll() {
    const [stations, sessions, sites, events] = await Promise.all([
      fetchAll("/api/v1/stations"), fetchAll("/api/v1/sessions?state=live"),
      api("/api/v1/sites?limit=1000"), api("/api/v1/events?limit=50&feed=true")]);
    S.stations = new Map(stations.map((s) => [s.station_id, s]));
    S.sessions = new Map(sessions.map((s) => [s.tx_ref, s]));
    setSites(sites.items);
    if (!S.siteId || !S.sites.has(S.siteId)) {
      const withStations = sites.items.filter((s) => s.stations > 0);
      S.siteId = (withStations[0] || sites.items[0] || {}).site_id || null;
    }
    renderSiteSelect();
    if (S.siteId) {
      const hist = await api(`/api/v1/sites/${encodeURIComponent(S.siteId)}/history`);
      S.history.set(S.siteId, hist.samples.map((p) => [Date.parse(p.ts), p.power_kw, p.limit_kw, p.planned_kw]));
    }
    $("events").replaceChildren(); S.newEvents = events.items.slice().reverse();
    S.gridDirty = S.sessionsDirty = S.siteDirty = true; schedule();
  }
  function setSites(list) { for (const s of list) S.sites.set(s.site_id, s); S.siteDirty = true; }

  // --- live feed --------------------------------------------------------------------
  function connectLive() {
    if (S.source) S.source.close();
    const url = "/api/v1/live" + (S.token ? "?access_token=" + encodeURIComponent(S.token) : "");
    const src = new EventSource(url); S.source = src;
    src.addEventListener("open", () => { $("conn").textContent = "live"; $("conn").className = "conn on"; });
    src.addEventListener("error", () => { $("conn").textContent = "reconnecting"; $("conn").className = "conn off"; });
    src.addEventListener("snapshot", (e) => { const m = JSON.parse(e.data); tick(m.ts); setSites(m.sites); schedule(); });
    src.addEventListener("delta", (e) => applyDelta(JSON.parse(e.data)));
  }
  function tick(ts) { const t = Date.parse(ts); if (isFinite(t)) S.now = t; }
  function applyDelta(m) {
    S.deltas = (S.deltas || 0) + 1; tick(m.ts);
    if (m.resync) { loadAll().catch(console.error); return; }
    for (const st of m.stations || []) {
      const old = S.stations.get(st.station_id);
      if (!old || old.status !== st.status || old.site_id !== st.site_id) S.gridDirty = true;
      S.stations.set(st.station_id, st); S.dirtyStations.add(st.station_id);
    }
    for (const s of m.sessions || []) {
      if (s.live) S.sessions.set(s.tx_ref, s); else S.sessions.delete(s.tx_ref);
      S.sessionsDirty = true; S.dirtyStations.add(s.station_id);  // its tile may be held back
    }
    if (m.sites) {
      setSites(m.sites);
      for (const s of m.sites) {
        const h = S.history.get(s.site_id) || []; h.push([S.now, s.power_kw, s.limit_kw, s.planned_kw_now]);
        if (h.length > 5000) h.shift(); S.history.set(s.site_id, h);
      }
    }
    if (m.events && m.events.length) S.newEvents.push(...m.events);
    const r = S.route;
    if (r.name === "session" && (m.sessions || []).some((s) => s.tx_ref === r.id)) loadDetail(false);
    schedule();
  }

  // --- rendering (batched per animation frame) --------------------------------------------
  function schedule() { if (!S.frame) S.frame = requestAnimationFrame(render); }
  function render() {
    S.frame = 0;
    $("clock").textContent = new Date(S.now).toISOString().slice(0, 19).replace("T", " ") + " UTC";
    if (S.route.name !== "overview") return;
    if (S.siteDirty || S.sessionsDirty) renderSite();
    renderGrid(); if (S.sessionsDirty) renderSessions(); renderEvents();
  }
  function renderSiteSelect() {
    const sel = $("site-select"); sel.replaceChildren();
    for (const id of [...S.sites.keys()].sort()) sel.append(el("option", {value: id, text: S.sites.get(id).name || id}));
    if (S.siteId) sel.value = S.siteId;
  }
  $("site-select").addEventListener("change", (e) => { S.siteId = e.target.value; loadAll().catch(console.error); });
  function renderSite() {
    S.siteDirty = false;
    const s = S.sites.get(S.siteId); if (!s) return;
    $("site-power").textContent = fmt(s.power_kw); $("site-limit").textContent = fmt(s.limit_kw);
    const unset = s.limit_set === false;  // no limit of its own: planned with the default, and said so
    $("site-limit").classList.toggle("muted-kpi", unset);
    $("site-limit-label").textContent = unset ? "default limit kW" : "limit kW";
    $("site-limit-note").hidden = !unset; $("site-limit-note").textContent = unset ? s.limit_note : "";
    $("legend-limit").textContent = unset ? "default limit" : "limit";
    $("site-headroom").textContent = fmt(s.headroom_kw); $("site-planned").textContent = fmt(s.planned_kw_now);
    $("site-sessions").textContent = s.active_sessions;
    const alarm = $("site-alarm");  // the over-limit alarm (metered power above the limit for too long)
    alarm.hidden = !s.over_limit;
    alarm.textContent = s.over_limit ? `Over the site limit: metered ${fmt(s.over_limit_metered_kw)} kW `
      + `against ${fmt(s.limit_kw)} kW since ${s.over_limit_changed_at || "?"}; other sessions are being lowered` : "";
    let risk = 0;
    for (const x of S.sessions.values()) if ((!S.siteId || x.site_id === S.siteId) && (outlook(x) || {}).risk) risk++;
    $("site-risk").textContent = risk;
    const o = s.optimizer;
    $("site-optimizer").textContent = o ? `${o.status || "?"} · ${o.strategy || ""} · ${fmt(o.solve_s, 2)} s` : "no plan";
    const hist = S.history.get(S.siteId) || [];
    let xMax = S.now + 15 * 60000;
    let plan = [];
    if (s.plan && s.plan.planned_kw) {
      plan = EvChart.steps(s.plan.start, s.plan.step_s, s.plan.planned_kw);
      if (plan.length) xMax = Math.min(Math.max(xMax, plan[plan.length - 1][0]), S.now + 12 * 3600000);
    }
    const limit = hist.map((p) => [p[0], p[2]]);
    if (s.limit_kw !== null) limit.push([S.now, s.limit_kw], [xMax, s.limit_kw]);
    const series = [
      {label: "power", points: hist.map((p) => [p[0], p[1]]), color: "#4aa3ff", width: 2},
      {label: unset ? "default limit" : "limit", points: limit, color: "#e5484d", dash: [6, 4], step: true},
      {label: "planned load", points: plan, color: "#f0b429", step: true},
    ];
    const xMin = Math.min(hist.length ? hist[0][0] : S.now, S.now - 15 * 60000);
    EvChart.draw($("site-chart"), series, {now: S.now, xMin, xMax, yLabel: "kW", height: 220});
  }
  function filteredStations() {
    const q = S.query.toLowerCase();
    return [...S.stations.values()].filter((s) => (!S.siteId || s.site_id === S.siteId || S.sites.size <= 1) &&
      (!q || s.station_id.toLowerCase().includes(q))).sort((a, b) => a.station_id < b.station_id ? -1 : 1);
  }
  const tiles = new Map();
  /* "Charging" while the applied limit (the plan) holds the car at 0 kW says so, and when it resumes. */
  function tileStatus(s) {
    if (s.status !== "Charging") return s.status;
    const held = [...S.sessions.values()].find((x) => x.station_id === s.station_id && x.applied_limit_kw === 0);
    if (!held) return s.status;
    return `Held back by plan (0 kW${held.resumes_at ? ", resumes " + new Date(Date.parse(held.resumes_at)).toISOString().slice(11, 16) : ""})`;
  }
  function tile(s) {
    const t = el("div", {class: "tile s-" + s.status, "data-sid": s.station_id, title: s.station_id,
      onclick: () => { location.href = stationUrl(s.station_id); }},
      el("div", {class: "sid", text: s.station_id}), el("span", {class: "kw", text: s.power_kw ? fmt(s.power_kw) + " kW" : ""}),
      el("div", {class: "st", text: tileStatus(s)}));
    return t;
  }
  function updateTile(t, s) {
    t.className = "tile s-" + s.status; t.children[1].textContent = s.power_kw ? fmt(s.power_kw) + " kW" : "";
    t.children[2].textContent = tileStatus(s);
  }
  function renderGrid() {
    if (!S.gridDirty) {  // cheap path: update only the tiles that changed and are on screen
      for (const sid of S.dirtyStations) { const t = tiles.get(sid); if (t) updateTile(t, S.stations.get(sid)); }
      S.dirtyStations.clear(); return;
    }
    S.gridDirty = false; S.dirtyStations.clear();
    const all = filteredStations(); const counts = {};
    for (const s of all) counts[s.status] = (counts[s.status] || 0) + 1;
    const chips = $("status-chips"); chips.replaceChildren();
    chips.append(el("button", {class: "chip" + (S.statusFilter ? "" : " active"), text: `all ${all.length}`,
      onclick: () => { S.statusFilter = null; S.gridPage = 0; S.gridDirty = true; schedule(); }}));
    for (const st of STATUSES) if (counts[st]) chips.append(el("button", {class: "chip s-chip" + (S.statusFilter === st ? " active" : ""),
      "data-status": st, text: `${st} ${counts[st]}`, onclick: () => { S.statusFilter = st; S.gridPage = 0; S.gridDirty = true; schedule(); }}));
    const shown = S.statusFilter ? all.filter((s) => s.status === S.statusFilter) : all;
    const pages = Math.max(1, Math.ceil(shown.length / GRID_PAGE)); S.gridPage = Math.min(S.gridPage, pages - 1);
    const page = shown.slice(S.gridPage * GRID_PAGE, (S.gridPage + 1) * GRID_PAGE);
    $("station-total").textContent = `${S.stations.size} total`;
    pager($("station-pager"), S.gridPage, pages, (p) => { S.gridPage = p; S.gridDirty = true; schedule(); });
    tiles.clear(); const frag = document.createDocumentFragment();
    for (const s of page) { const t = tile(s); tiles.set(s.station_id, t); frag.append(t); }
    $("station-grid").replaceChildren(frag);
  }
  function pager(node, page, pages, go) {
    node.replaceChildren(el("button", {text: "‹", onclick: () => go(page - 1)}), el("span", {text: `${page + 1} / ${pages}`}),
      el("button", {text: "›", onclick: () => go(page + 1)}));
    node.children[0].disabled = page <= 0; node.children[2].disabled = page >= pages - 1;
  }
  $("station-filter").addEventListener("input", (e) => { S.query = e.target.value; S.gridPage = 0; S.gridDirty = true; schedule(); });
  /* Power the car still needs on average to be full at departure, and whether it gets it. */
  function outlook(s) {
    if (s.energy_needed_kwh === null || s.energy_needed_kwh === undefined || !s.departure_time) return null;
    const left = Math.max(0, s.energy_needed_kwh - (s.energy_kwh || 0));
    const hours = (Date.parse(s.departure_time) - S.now) / 3600000;
    if (left <= 0.01) return {needKw: 0, risk: false, late: false};
    if (!(hours > 0)) return {needKw: Infinity, risk: true, late: true};
    const needKw = left / hours;
    const gets = s.applied_limit_kw !== null && s.applied_limit_kw !== undefined ? s.applied_limit_kw : (s.power_kw || 0);
    return {needKw, risk: needKw > gets + 0.1, late: false};
  }
  function progressBar(s) {
    const p = s.progress === null || s.progress === undefined ? null : s.progress;
    const o = outlook(s);
    const cls = o && o.late ? " late" : o && o.risk ? " risk" : "";
    const tip = p === null ? "no energy need reported" :
      `${Math.round(p * 100)} %` + (o && o.needKw > 0 && isFinite(o.needKw) ? `, needs ${fmt(o.needKw)} kW on average to be full at departure` : "");
    const bar = el("div", {class: "progress" + cls, title: tip},
      el("div", {style: `width:${p === null ? 0 : Math.round(p * 100)}%`}));
    return el("div", {}, bar, el("small", {text: `${fmt(s.energy_kwh)} / ${fmt(s.energy_needed_kwh)} kWh`}));
  }
  function renderSessions() {
    S.sessionsDirty = false;
    const list = [...S.sessions.values()].filter((s) => !S.siteId || s.site_id === S.siteId || S.sites.size <= 1)
      .sort((a, b) => (a.departure_time || "~") < (b.departure_time || "~") ? -1 : 1);
    const pages = Math.max(1, Math.ceil(list.length / SESSION_PAGE)); S.sessionPage = Math.min(S.sessionPage, pages - 1);
    $("session-total").textContent = `${list.length}`;
    pager($("session-pager"), S.sessionPage, pages, (p) => { S.sessionPage = p; S.sessionsDirty = true; schedule(); });
    const rows = list.slice(S.sessionPage * SESSION_PAGE, (S.sessionPage + 1) * SESSION_PAGE).map((s) =>
      el("tr", {"data-tx": s.tx_ref, onclick: () => { location.hash = "#/session/" + encodeURIComponent(s.tx_ref); }},
        el("td", {text: s.transaction_id}), el("td", {text: `${s.station_id} / ${s.evse_id}`}),
        el("td", {class: "num", text: fmt(s.power_kw)}), el("td", {class: "num", text: fmt(s.applied_limit_kw)}),
        el("td", {}, progressBar(s)), el("td", {class: "num", text: s.soc === null ? "–" : fmt(s.soc, 0) + " %"}),
        el("td", {text: s.departure_time ? until(s.departure_time) : "–"}), el("td", {text: s.plan_status || "–"})));
    $("session-table").tBodies[0].replaceChildren(...rows);
  }
  function eventLine(e) {
    const who = [e.station_id, e.evse_id, e.transaction_id].filter((x) => x !== null && x !== undefined).join(" · ") || e.site_id || "";
    const data = e.data || {}; const detail = data.status || data.limit_kw || data.reason || data.stopped_reason || "";
    return el("li", {}, el("span", {class: "ev-time", text: timeOf(e.ts)}), el("span", {class: "ev-type", text: e.type}),
      who, detail ? ` ${detail}` : "");
  }
  function renderEvents() {
    if (!S.newEvents.length) return;
    const list = $("events");
    for (const e of S.newEvents.slice(-FEED_MAX)) list.prepend(eventLine(e));
    S.newEvents = [];
    while (list.children.length > FEED_MAX) list.lastChild.remove();
  }
  $("limit-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const s = await api(`/api/v1/sites/${encodeURIComponent(S.siteId)}/limit`, {method: "PUT", body: {limit_kw: Number($("limit-input").value)}});
      setSites([s]); $("limit-msg").textContent = " applied"; $("limit-msg").className = "ok"; schedule();
    } catch (err) { $("limit-msg").textContent = " " + err.message; $("limit-msg").className = "error"; }
  });

  // --- detail views ---------------------------------------------------------------------
  function facts(node, pairs) {
    node.replaceChildren();
    for (const [k, v] of pairs) node.append(el("dt", {text: k}), v instanceof Node ? el("dd", {}, v) : el("dd", {text: v === null || v === undefined ? "–" : String(v)}));
  }
  async function loadDetail(force) {
    const now = Date.now(); if (!force && now - S.detailAt < DETAIL_REFRESH_MS) return; S.detailAt = now;
    const r = S.route;
    try {
      if (r.name === "session") renderSession(await api(sessionUrl(r.id, "", "samples=2000")));
    } catch (err) { console.error(err); }
  }
  function renderSession(s) {
    $("xv-id").textContent = s.transaction_id; $("xv-state").textContent = s.live ? (s.charging_state || "live") : "ended";
    $("xv-state").className = "badge " + (s.live ? "s-Charging" : "s-Offline");
    facts($("xv-facts"), [["station", el("a", {href: stationUrl(s.station_id), text: `${s.station_id} / EVSE ${s.evse_id}`})], ["id token", s.id_token], ["started", s.started_at],
      ["ended", s.ended_at], ["power kW", fmt(s.power_kw, 2)], ["energy kWh", fmt(s.energy_kwh, 2)],
      ["energy need kWh", fmt(s.energy_needed_kwh, 2)], ["SoC %", fmt(s.soc, 0)], ["departure", s.departure_time ? until(s.departure_time) : null],
      ["applied profile", s.applied_profile ? `${s.applied_profile.status} · ${fmt((s.applied_profile.limit_w || 0) / 1000)} kW` : null],
      ["plan", s.planned_schedule ? `${s.planned_schedule.status} · ${s.planned_schedule.strategy}` : null],
      ["stopped reason", s.stopped_reason],
      ["smart charging", s.loop ? `${s.loop.schedules_sent} schedules sent (${s.loop.last_schedule_status || "–"}), ` +
        `${s.loop.renegotiations} renegotiations, EV plan ${s.loop.ev_plan_within_limits === null ? "–" :
        s.loop.ev_plan_within_limits ? "within limits" : "OUTSIDE limits"}` : null]]);
    $("xv-progress").style.width = `${Math.round((s.progress || 0) * 100)}%`;
    const plan = s.planned_schedule;
    let applied = [];
    if (s.applied_profile && s.applied_profile.limit_w !== undefined) {
      const t0 = Date.parse(s.applied_profile.answered_at || s.applied_profile.sent_at) || S.now;
      applied = [[t0, s.applied_profile.limit_w / 1000], [Math.max(S.now, t0 + 60000), s.applied_profile.limit_w / 1000]];
    }
    const series = [
      {label: "measured power", points: (s.meter || []).map((m) => [Date.parse(m.ts), (m.power_w || 0) / 1000]), color: "#4aa3ff"},
      {label: "planned limit", points: plan && plan.limits_kw ? EvChart.steps(plan.start, plan.step_s, plan.limits_kw) : [],
        color: "#f0b429", step: true},
      {label: "applied limit", points: applied, color: "#e5484d", dash: [6, 4]},
    ];
    const dep = s.departure_time ? Date.parse(s.departure_time) : NaN;
    const xMax = isFinite(dep) ? Math.max(dep + 15 * 60000, S.now) : undefined;
    const markers = isFinite(dep) ? [{t: dep, label: "departure", color: "#7fe0a8"}] : [];
    EvChart.draw($("session-chart"), series, {now: S.now, xMax, markers, yLabel: "kW", height: 240,
      empty: "no samples or schedule yet"});
    $("xv-stop").disabled = !s.live;
  }
  $("xv-stop").addEventListener("click", async () => {
    try { const r = await api(sessionUrl(S.route.id, "/stop", ""), {method: "POST"}); $("xv-msg").textContent = `stop: ${r.status}`; }
    catch (err) { $("xv-msg").textContent = err.message; $("xv-msg").className = "error"; }
  });

  // --- routing ------------------------------------------------------------------------
  // A session is its tx_ref "station:transactionId[:generation]" (the id percent-encoded by the csms);
  // the API names it /sessions/{station}/{transactionId}?generation=N.
  function sessionUrl(ref, suffix, query) {
    const [sid, tx, gen] = ref.split(":");
    const q = [gen && !suffix ? "generation=" + gen : "", query].filter(Boolean).join("&");
    return `/api/v1/sessions/${encodeURIComponent(sid)}/${tx}${suffix}` + (q ? "?" + q : "");
  }
  function route() {
    const h = location.hash;
    const m = h.match(/^#\/(station|session)\/(.+)$/);
    if (m && m[1] === "station") { location.replace(stationUrl(decodeURIComponent(m[2]))); return; }  // its own page
    S.route = m ? {name: m[1], id: decodeURIComponent(m[2])} : {name: "overview"};
    $("login").hidden = true;
    $("overview").hidden = S.route.name !== "overview";
    $("session-view").hidden = S.route.name !== "session";
    if (S.route.name === "overview") { S.gridDirty = S.sessionsDirty = S.siteDirty = true; schedule(); }
    else loadDetail(true);
  }
  window.addEventListener("hashchange", () => { if (!location.hash.startsWith("#token=")) route(); });
  window.addEventListener("resize", () => { S.siteDirty = true; schedule(); });

  async function start() {
    try {
      const who = await api("/api/v1/whoami");
      S.role = who.role; S.auth = who.auth;
      $("who").textContent = who.auth ? `${who.name} (${who.role})` : "auth off";
      $("logout").hidden = !who.auth;
      document.body.classList.toggle("viewer", who.role !== "operator");
    } catch (err) { if (err.status !== 401) showLogin("cannot reach the API: " + err.message); return; }
    route();
    await loadAll();
    connectLive();
  }
  const frag = location.hash.match(/^#token=(.+)$/);
  if (frag) {  // token in the URL fragment: keep it for this tab, then drop it from the address bar
    S.token = decodeURIComponent(frag[1]); sessionStorage.setItem("evfleet-token", S.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  start();
})();
