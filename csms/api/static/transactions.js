// Transaction history page: filter, sort and export what /api/v1/transactions returns (no framework).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const token = sessionStorage.getItem("evfleet-token") || "";
  const state = {rows: [], sortKey: "started_at", sortDesc: true};

  function headers() { return token ? {"Authorization": "Bearer " + token} : {}; }

  function query() {
    const q = new URLSearchParams();
    const put = (key, value) => { if (value) q.set(key, value); };
    put("station_id", $("f-station").value.trim());
    put("id_token", $("f-token").value.trim());
    put("from", $("f-from").value ? $("f-from").value + ":00Z" : "");
    put("to", $("f-to").value ? $("f-to").value + ":59Z" : "");
    if ($("f-state").value !== "all") q.set("state", $("f-state").value);
    return q;
  }

  async function load() {
    $("tx-error").textContent = "";
    const q = query(); q.set("limit", "1000");
    const r = await fetch("/api/v1/transactions?" + q.toString(), {headers: headers()});
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      $("tx-error").textContent = body && body.error ? body.error.message : "HTTP " + r.status;
      if (r.status === 401) $("tx-error").textContent += " (sign in on the overview page first)";
      state.rows = []; render(); return;
    }
    state.rows = body.items;
    $("tx-total").textContent = body.total > body.items.length
      ? `(${body.items.length} of ${body.total})` : `(${body.total})`;
    render();
  }

  function fmt(value, key) {
    if (value === null || value === undefined || value === "") return "–";
    if (typeof value === "number") return key === "energy_kwh" ? value.toFixed(2) : value.toFixed(2);
    if (key === "started_at" || key === "ended_at") return String(value).replace("T", " ").slice(0, 19);
    return String(value);
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href; a.textContent = text;
    a.addEventListener("click", (ev) => ev.stopPropagation());
    return a;
  }

  function render() {
    const key = state.sortKey, sign = state.sortDesc ? -1 : 1;
    const rows = [...state.rows].sort((a, b) => {
      const x = a[key], y = b[key];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sign;
    });
    const body = document.querySelector("#tx-table tbody");
    body.replaceChildren(...rows.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.tx = row.tx_ref;
      for (const th of document.querySelectorAll("#tx-table th")) {
        const td = document.createElement("td");
        const text = fmt(row[th.dataset.key], th.dataset.key);
        if (th.dataset.key === "station_id" && row.station_id) {  // the station page
          td.appendChild(link("/static/station.html?id=" + encodeURIComponent(row.station_id), text));
        } else if (th.dataset.key === "transaction_id") {  // the session view of the dashboard
          td.appendChild(link("/#/session/" + encodeURIComponent(row.tx_ref), text));
        } else {
          td.textContent = text;
        }
        td.dataset.key = th.dataset.key;
        if (th.classList.contains("num")) td.className = "num";
        tr.appendChild(td);
      }
      return tr;
    }));
    for (const th of document.querySelectorAll("#tx-table th")) {
      th.classList.toggle("sorted", th.dataset.key === key);
      th.dataset.dir = th.dataset.key === key ? (state.sortDesc ? "desc" : "asc") : "";
    }
    const sum = (k) => state.rows.reduce((acc, r) => acc + (typeof r[k] === "number" ? r[k] : 0), 0);
    $("tx-sums").textContent = state.rows.length
      ? `${sum("energy_kwh").toFixed(1)} kWh, cost ${sum("cost").toFixed(2)} (uncontrolled ${sum("uncontrolled_cost").toFixed(2)})`
      : "";
  }

  async function exportCsv() {
    const r = await fetch("/api/v1/transactions.csv?" + query().toString(), {headers: headers()});
    if (!r.ok) { $("tx-error").textContent = "export failed: HTTP " + r.status; return; }
    const url = URL.createObjectURL(await r.blob());
    const a = document.createElement("a");
    a.href = url; a.download = "transactions.csv"; document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  $("tx-filter").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  $("tx-csv").addEventListener("click", exportCsv);
  for (const th of document.querySelectorAll("#tx-table th")) {
    th.addEventListener("click", () => {
      state.sortDesc = state.sortKey === th.dataset.key ? !state.sortDesc : true;
      state.sortKey = th.dataset.key; render();
    });
  }
  load();
})();
