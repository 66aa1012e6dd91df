/* Time-series charts of the dashboard on uPlot (vendor/uplot, MIT): lines and step lines over a UTC
   time axis, drag to zoom (double-click resets), a tooltip with every value at the cursor, and
   vertical markers ("now", departure). No inline style: positions are set through the CSSOM. */
"use strict";
window.EvChart = (function () {
  const AXIS = {stroke: "#8b98a5", grid: {stroke: "#2a3440", width: 1}, ticks: {stroke: "#2a3440", width: 1},
    font: "11px system-ui, sans-serif"};
  const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
  const fmtV = (v) => (v === null || v === undefined || !isFinite(v)) ? "–" : (Math.round(v * 100) / 100).toString();
  const fmtT = (s) => new Date(s * 1000).toISOString().slice(5, 16).replace("T", " ");

  /* [{points: [[tMs, v], ...]}, ...] -> uPlot's aligned columns [xs (s), ys1, ys2, ...]. */
  function align(series) {
    const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].filter(isFinite).sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const cols = series.map((s) => {
      const ys = new Array(xs.length).fill(null);
      for (const [t, v] of s.points) if (index.has(t)) ys[index.get(t)] = (v === undefined || !isFinite(v)) ? null : v;
      return ys;
    });
    return [xs.map((x) => x / 1000), ...cols];
  }

  function tooltip(u, box) {
    const idx = u.cursor.idx;
    if (idx === null || idx === undefined || u.cursor.left < 0) { box.hidden = true; return; }
    box.replaceChildren();
    const head = document.createElement("div"); head.className = "tt-time"; head.textContent = fmtT(u.data[0][idx]) + " UTC";
    box.append(head);
    u.series.forEach((s, i) => {
      if (i === 0 || !s.show) return;
      let v = u.data[i][idx];
      if (v === null) { for (let j = idx; j >= 0; j--) if (u.data[i][j] !== null) { v = u.data[i][j]; break; } }  // step value
      const row = document.createElement("div"); row.className = "tt-row";
      const dot = document.createElement("span"); dot.className = "tt-dot"; dot.style.background = s._color;
      row.append(dot, `${s.label}: ${fmtV(v)} ${s._unit || ""}`); box.append(row);
    });
    box.hidden = false;
    const x = u.cursor.left, w = box.offsetWidth;
    box.style.left = (x + 12 + w > u.over.clientWidth ? x - w - 12 : x + 12) + "px";
    box.style.top = Math.max(0, u.cursor.top - 20) + "px";
  }

  function markersHook(holder) {
    return (u) => {
      const ctx = u.ctx; const top = u.bbox.top, h = u.bbox.height;
      for (const m of holder.markers) {
        const t = m.t / 1000; if (!(t >= u.scales.x.min && t <= u.scales.x.max)) continue;
        const x = Math.round(u.valToPos(t, "x", true));
        ctx.save(); ctx.strokeStyle = m.color; ctx.fillStyle = m.color; ctx.setLineDash([2, 3]); ctx.lineWidth = 1;
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + h); ctx.stroke();
        ctx.setLineDash([]); ctx.font = `${Math.round(11 * devicePixelRatio)}px system-ui, sans-serif`;
        ctx.fillText(m.label, x + 4, top + 12 * devicePixelRatio); ctx.restore();
      }
    };
  }

  function build(node, series, opts, holder) {
    const box = document.createElement("div"); box.className = "chart-tooltip"; box.hidden = true;
    const cfg = {
      width: Math.max(200, node.clientWidth || 600), height: opts.height || 220,
      legend: {show: false}, tzDate: utc,
      cursor: {drag: {x: true, y: false, setScale: true}, points: {size: 6}},
      scales: {x: {time: true}, y: {range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1]}},
      axes: [{...AXIS, values: (u, splits) => {
        const wide = u.scales.x.max - u.scales.x.min > 86400;
        return splits.map((t) => new Date(t * 1000).toISOString().slice(wide ? 5 : 11, 16).replace("T", " "));
      }}, {...AXIS, label: opts.yLabel || "", labelSize: 14, size: 46}],
      series: [{}].concat(series.map((s) => ({
        label: s.label || "", stroke: s.color, width: s.width || 2, dash: s.dash, spanGaps: true,
        paths: s.step ? uPlot.paths.stepped({align: 1}) : undefined, _color: s.color, _unit: opts.unit || "kW",
        points: {show: false}}))),
      hooks: {
        setCursor: [(u) => tooltip(u, box)],
        draw: [markersHook(holder)],
        setSelect: [() => { holder.zoomed = true; }],
        ready: [(u) => {
          u.over.append(box);
          u.over.addEventListener("dblclick", () => { holder.zoomed = false; holder.applyRange(); });
          u.over.addEventListener("mouseleave", () => { box.hidden = true; });
        }],
      },
    };
    return new uPlot(cfg, align(series), node);
  }

  /* Draw (or update in place) the chart in `node` (a <div>). series: [{points, color, step, dash,
     width, label}]; opts: {now, xMin, xMax, markers, yLabel, height, empty}. A zoomed chart keeps its zoom. */
  function draw(node, series, opts) {
    opts = opts || {};
    let holder = node._evchart;
    const shape = series.map((s) => `${s.label}|${s.color}|${!!s.step}|${(s.dash || []).join(",")}`).join(";");
    if (!holder || holder.shape !== shape) {
      if (holder) holder.u.destroy();
      node.replaceChildren();
      holder = {shape, zoomed: false, markers: [], range: null};
      holder.applyRange = () => {
        if (holder.range && !holder.zoomed) holder.u.setScale("x", holder.range);
      };
      holder.u = build(node, series, opts, holder);
      node._evchart = holder;
    }
    const data = align(series);
    holder.markers = (opts.markers || []).slice();
    if (opts.now !== undefined) holder.markers.push({t: opts.now, label: "now", color: "#8b98a5"});
    const xs = data[0];
    const lo = opts.xMin !== undefined ? opts.xMin / 1000 : xs[0];
    const hi = opts.xMax !== undefined ? opts.xMax / 1000 : xs[xs.length - 1];
    holder.range = (lo !== undefined && hi !== undefined && hi > lo) ? {min: lo, max: hi} : null;
    holder.u.setData(data, !holder.zoomed && !holder.range);
    holder.applyRange();
    const width = Math.max(200, node.clientWidth || 600);
    if (holder.u.width !== width) holder.u.setSize({width, height: opts.height || 220});
    node.classList.toggle("chart-empty", xs.length === 0);
    node.dataset.empty = opts.empty || "no data yet";
    node.dataset.points = String(xs.length);
    return holder.u;
  }

  /* Step series from a start time, a step length and values. */
  function steps(startIso, stepS, values) {
    const t0 = Date.parse(startIso); const pts = [];
    if (!isFinite(t0) || !Array.isArray(values)) return pts;
    values.forEach((v, i) => pts.push([t0 + i * stepS * 1000, v]));
    if (values.length) pts.push([t0 + values.length * stepS * 1000, values[values.length - 1]]);
    return pts;
  }
  return {draw, steps, align};
})();
