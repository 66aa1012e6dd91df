// Station page: one station's EVSEs, connectors, transactions and last messages, and the operator's
// actions on it (remote start/stop, unlock, availability, reset, trigger, get/clear charging profiles),
// all through /api/v1 with the dashboard's token (same tab). Plain JS, no inline script or style.
"use strict";
(function () {
  const REFRESH_MS = 2000, TX_REFRESH_MS = 15000;
  const $ = (id) => document.getElementById(id);
  const sid = new URLSearchParams(location.search).get("id") || "";
  const token = sessionStorage.getItem("evfleet-token") || "";
  const S = {station: null, role: "viewer", txAt: 0, txRefs: "", busy: false};
  window.evfleetStation = S;  // for browser tests
  const base = `/api/v1/stations/${encodeURIComponent(sid)}`;

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  const fmt = (v, d = 1) => (v === null || v === undefined || !isFinite(v)) ? "–" : Number(v).toFixed(d);
  const when = (iso) => iso ? String(iso).replace("T", " ").slice(0, 19) : "–";
  const sessionLink = (ref, text) => el("a", {href: "/#/session/" + encodeURIComponent(ref), text});

  async function api(path, opts = {}) {
    const headers = {"Accept": "application/json"};
    if (token) headers["Authorization"] = "Bearer " + token;
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {method: opts.method || "GET", headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body)});
    const body = r.status === 204 ? null : await r.json().catch(() => null);
    if (!r.ok) {
      const err = new Error(body && body.error ? body.error.message : `HTTP ${r.status}`);
      err.status = r.status; err.code = body && body.error ? body.error.code : ""; throw err;
    }
    return body;
  }

  // --- rendering ----------------------------------------------------------------------
  function budgetNote(e) {  // how the site budget counts the EVSE (docs/smart-charging.md)
    if (e.noncompliant_w !== null && e.noncompliant_w !== undefined) return `non-compliant: draws ${fmt(e.noncompliant_w / 1000)} kW`;
    if (!e.steerable) return "refuses profiles: counted at its maximum";
    return "steered";
  }
  function evseActions(e) {
    const cell = el("td", {class: "operator-only"});
    if (e.transaction_id) {
      cell.append(el("button", {text: "Stop", "data-stop": e.transaction_id,
        onclick: () => act("remote-stop", {transaction_id: e.transaction_id}, `stop ${e.transaction_id}`)}));
    }
    for (const c of e.connectors) {
      cell.append(el("button", {text: `Unlock ${e.evse_id}/${c.connector_id}`, "data-unlock": `${e.evse_id}/${c.connector_id}`,
        onclick: () => act("unlock", {evse_id: e.evse_id, connector_id: c.connector_id}, `unlock ${e.evse_id}/${c.connector_id}`)}));
    }
    const inop = e.connectors.every((c) => c.status === "Unavailable");
    cell.append(el("button", {text: inop ? "Operative" : "Inoperative",
      onclick: () => act("availability", {operational_status: inop ? "Operative" : "Inoperative", evse_id: e.evse_id},
        `EVSE ${e.evse_id} ${inop ? "operative" : "inoperative"}`)}));
    return cell;
  }
  function renderStation(s) {
    S.station = s;
    $("sv-id").textContent = s.station_id; $("sv-status").textContent = s.status; $("sv-status").className = "badge s-" + s.status;
    document.title = `evfleet ${s.station_id}`;
    const facts = [["site", s.site_id], ["online", s.online ? "yes" : "no"], ["power kW", fmt(s.power_kw)],
      ["vendor", s.vendor], ["model", s.model], ["firmware", s.firmware_version], ["serial", s.serial_number],
      ["last seen", when(s.last_seen)], ["connected", when(s.connected_at)], ["last boot", when(s.last_boot)],
      ["boot reason", s.boot_reason], ["node", s.node], ["OCPP", s.ocpp_version]];
    $("sv-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {text: k}), el("dd", {text: v === null || v === undefined ? "–" : String(v)})]));
    $("sv-evses").tBodies[0].replaceChildren(...s.evses.map((e) => el("tr", {"data-evse": e.evse_id},
      el("td", {text: e.evse_id}),
      el("td", {}, ...e.connectors.map((c) => el("span", {class: "conn-status s-" + c.status, "data-connector": `${e.evse_id}/${c.connector_id}`,
        text: `${c.connector_id}: ${c.status}`}))),
      el("td", {class: "num", text: fmt(e.power_kw)}), el("td", {class: "num", text: e.max_power_w === null ? "–" : fmt(e.max_power_w / 1000)}),
      el("td", {class: "num", text: e.applied_limit_w === null ? "–" : fmt(e.applied_limit_w / 1000)}),
      el("td", {class: e.noncompliant_w !== null || !e.steerable ? "error" : "", text: budgetNote(e)}),
      el("td", {}, e.tx_ref ? sessionLink(e.tx_ref, e.transaction_id) : "–"), evseActions(e))));
    for (const sel of document.querySelectorAll(".evse-select")) {
      const keep = sel.value;
      sel.replaceChildren(el("option", {value: "", text: sel.id === "start-evse" ? "any free" : "all"}),
        ...s.evses.map((e) => el("option", {value: String(e.evse_id), text: String(e.evse_id)})));
      sel.value = keep;
    }
  }
  function eventLine(e) {
    const data = e.data || {};
    const detail = data.status || data.reason || data.stopped_reason || data.action || data.requested_message || "";
    const who = [e.evse_id, e.transaction_id].filter((x) => x !== null && x !== undefined).join(" · ");
    return el("li", {"data-type": e.type}, el("span", {class: "ev-time", text: when(e.ts).slice(11)}),
      el("span", {class: "ev-type", text: e.type}), who, detail ? ` ${detail}` : "");
  }
  function renderTransactions(page) {
    $("sv-tx-total").textContent = `(${page.total})`;
    $("sv-transactions").tBodies[0].replaceChildren(...page.items.map((t) => el("tr", {"data-tx": t.tx_ref},
      el("td", {text: when(t.started_at)}), el("td", {text: t.live ? "live" : when(t.ended_at)}),
      el("td", {}, sessionLink(t.tx_ref, t.transaction_id)), el("td", {text: t.id_token || "–"}),
      el("td", {class: "num", text: fmt(t.energy_kwh, 2)}), el("td", {class: "num", text: fmt(t.cost, 2)}),
      el("td", {text: t.stopped_reason || "–"}))));
  }

  // --- loading ------------------------------------------------------------------------
  async function refresh() {
    if (S.busy) return; S.busy = true;
    try {
      const meter = $("sv-meter").checked ? "" : "&feed=true";
      const [station, events] = await Promise.all([api(base),
        api(`/api/v1/events?limit=50${meter}&station_id=${encodeURIComponent(sid)}`)]);
      renderStation(station);
      $("sv-events").replaceChildren(...events.items.map(eventLine));
      const refs = station.evses.map((e) => e.tx_ref || "").join(",");
      if (refs !== S.txRefs || Date.now() - S.txAt > TX_REFRESH_MS) {
        S.txRefs = refs; S.txAt = Date.now();
        renderTransactions(await api(`/api/v1/transactions?limit=50&station_id=${encodeURIComponent(sid)}`));
      }
      $("sv-error").textContent = "";
    } catch (err) {
      $("sv-error").textContent = err.message + (err.status === 401 ? " (sign in on the overview page first)" : "");
    } finally { S.busy = false; }
  }

  // --- actions ------------------------------------------------------------------------
  function log(text, ok) {
    $("sv-log").prepend(el("li", {class: ok ? "ok" : "error"}, el("span", {class: "ev-time", text: new Date().toISOString().slice(11, 19)}), " ", text));
  }
  async function act(path, body, what, method = "POST") {
    try {
      const r = await api(`${base}/${path}`, {method, body});
      log(`${what}: ${r.action} ${r.status || r.outcome}`, r.accepted || r.status === "NoProfiles");
      setTimeout(refresh, 300);
      return r;
    } catch (err) { log(`${what}: ${err.message}`, false); return null; }
  }
  const evseOf = (id) => $(id).value ? Number($(id).value) : undefined;
  $("f-start").addEventListener("submit", (ev) => {
    ev.preventDefault();
    act("remote-start", {id_token: $("start-token").value.trim(), evse_id: evseOf("start-evse")}, "remote start");
  });
  $("f-trigger").addEventListener("submit", (ev) => {
    ev.preventDefault();
    act("trigger", {requested_message: $("trigger-message").value, evse_id: evseOf("trigger-evse")},
      `trigger ${$("trigger-message").value}`);
  });
  for (const b of document.querySelectorAll("[data-availability]")) {
    b.addEventListener("click", () => act("availability", {operational_status: b.dataset.availability}, `station ${b.dataset.availability}`));
  }
  for (const b of document.querySelectorAll("[data-reset]")) {
    b.addEventListener("click", () => {
      if (b.dataset.reset === "Immediate" && !confirm(`Reset ${sid} now? Running transactions end.`)) return;
      act("reset", {type: b.dataset.reset}, `reset ${b.dataset.reset}`);
    });
  }
  function profileQuery() {
    const q = new URLSearchParams();
    if ($("profile-evse").value) q.set("evse_id", $("profile-evse").value);
    if ($("profile-purpose").value) q.set("purpose", $("profile-purpose").value);
    return q;
  }
  function renderProfiles(report) {
    const rows = [];
    for (const group of report.profiles) for (const p of group.charging_profiles) {
      const sched = (p.chargingSchedule || p.charging_schedule || [{}])[0] || {};
      const periods = sched.chargingSchedulePeriod || sched.charging_schedule_period || [];
      const id = p.id;
      rows.push(el("tr", {"data-profile": id}, el("td", {text: group.evse_id}), el("td", {text: id}),
        el("td", {text: p.chargingProfilePurpose || p.charging_profile_purpose || "–"}),
        el("td", {text: p.stackLevel ?? p.stack_level ?? "–"}), el("td", {text: p.chargingProfileKind || p.charging_profile_kind || "–"}),
        el("td", {text: sched.chargingRateUnit || sched.charging_rate_unit || "–"}),
        el("td", {class: "num", text: periods.length ? fmt(periods[0].limit, 1) : "–"}), el("td", {text: periods.length}),
        el("td", {}, el("button", {text: "Clear", class: "danger", onclick: () => act(`charging-profiles?profile_id=${id}`, undefined, `clear profile ${id}`, "DELETE")}))));
    }
    if (!rows.length) rows.push(el("tr", {}, el("td", {colspan: "9", class: "muted", text: report.complete ?
      "no profiles installed" : "no report from the station in time"})));
    $("sv-profiles").hidden = false;
    $("sv-profiles").tBodies[0].replaceChildren(...rows);
  }
  $("f-profiles").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = await act("charging-profiles?" + profileQuery().toString(), undefined, "get profiles", "GET");
    if (r) renderProfiles(r);
  });
  $("profiles-clear").addEventListener("click", () => {
    const q = profileQuery();
    if (![...q.keys()].length) { log("clear profiles: pick an EVSE or a purpose first", false); return; }
    act("charging-profiles?" + q.toString(), undefined, "clear profiles", "DELETE");
  });
  $("sv-meter").addEventListener("change", refresh);

  async function start() {
    if (!sid) { $("sv-error").textContent = "no station id: open this page from a station tile"; return; }
    try {
      const who = await api("/api/v1/whoami");
      S.role = who.role; $("who").textContent = who.auth ? `${who.name} (${who.role})` : "auth off";
      document.body.classList.toggle("viewer", who.role !== "operator");
    } catch (err) {
      $("sv-error").textContent = err.message + (err.status === 401 ? " (sign in on the overview page first)" : "");
      return;
    }
    await refresh();
    setInterval(refresh, REFRESH_MS);
  }
  start();
})();
