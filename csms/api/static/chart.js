/* Tiny time-series chart on <canvas> (no library): lines and step lines over a time axis. */
"use strict";
window.TinyChart = (function () {
  function niceStep(range, ticks) {
    const raw = range / Math.max(1, ticks);
    const mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
    const norm = raw / mag;
    return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  }
  function hhmm(ms) {
    const d = new Date(ms);
    return String(d.getUTCHours()).padStart(2, "0") + ":" + String(d.getUTCMinutes()).padStart(2, "0");
  }
  /* series: [{points: [[tMs, value|null], ...], color, step, dash, width}], opts: {now, yLabel, xMin, xMax} */
  function draw(canvas, series, opts) {
    opts = opts || {};
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || 600, cssH = canvas.clientHeight || Number(canvas.getAttribute("height")) || 200;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr); canvas.height = Math.round(cssH * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    const pad = {l: 46, r: 10, t: 10, b: 22};
    let xMin = Infinity, xMax = -Infinity, yMax = 0;
    for (const s of series) for (const [t, v] of s.points) {
      if (v === null || v === undefined || !isFinite(v)) continue;
      xMin = Math.min(xMin, t); xMax = Math.max(xMax, t); yMax = Math.max(yMax, v);
    }
    if (opts.xMin !== undefined) xMin = opts.xMin;
    if (opts.xMax !== undefined) xMax = opts.xMax;
    ctx.fillStyle = "#8b98a5"; ctx.font = "11px system-ui, sans-serif";
    if (!isFinite(xMin) || !isFinite(xMax)) { ctx.fillText(opts.empty || "no data yet", pad.l, cssH / 2); return; }
    if (xMax <= xMin) xMax = xMin + 60000;
    yMax = yMax <= 0 ? 1 : yMax * 1.1;
    const W = cssW - pad.l - pad.r, H = cssH - pad.t - pad.b;
    const X = (t) => pad.l + (t - xMin) / (xMax - xMin) * W;
    const Y = (v) => pad.t + H - v / yMax * H;
    ctx.strokeStyle = "#2a3440"; ctx.lineWidth = 1;
    const ys = niceStep(yMax, 4);
    for (let v = 0; v <= yMax; v += ys) {
      ctx.beginPath(); ctx.moveTo(pad.l, Y(v)); ctx.lineTo(pad.l + W, Y(v)); ctx.stroke();
      ctx.fillText(String(Math.round(v * 10) / 10), 4, Y(v) + 4);
    }
    const xs = niceStep((xMax - xMin) / 60000, 6) * 60000;
    for (let t = Math.ceil(xMin / xs) * xs; t <= xMax; t += xs) ctx.fillText(hhmm(t), X(t) - 14, cssH - 6);
    if (opts.yLabel) ctx.fillText(opts.yLabel, 4, pad.t + 8);
    ctx.save(); ctx.beginPath(); ctx.rect(pad.l, pad.t, W, H); ctx.clip();
    for (const s of series) {
      ctx.strokeStyle = s.color; ctx.lineWidth = s.width || 2; ctx.setLineDash(s.dash || []);
      ctx.beginPath(); let pen = false, lastY = null;
      for (const [t, v] of s.points) {
        if (v === null || v === undefined || !isFinite(v)) { pen = false; continue; }
        const x = X(t), y = Y(v);
        if (!pen) { ctx.moveTo(x, y); pen = true; }
        else { if (s.step && lastY !== null) ctx.lineTo(x, lastY); ctx.lineTo(x, y); }
        lastY = y;
      }
      ctx.stroke();
    }
    ctx.restore(); ctx.setLineDash([]);
    const markers = (opts.markers || []).slice();
    if (opts.now !== undefined) markers.push({t: opts.now, label: "now", color: "#8b98a5"});
    for (const m of markers) {
      if (!(m.t >= xMin && m.t <= xMax)) continue;
      ctx.strokeStyle = m.color; ctx.fillStyle = m.color; ctx.setLineDash([2, 3]); ctx.beginPath();
      ctx.moveTo(X(m.t), pad.t); ctx.lineTo(X(m.t), pad.t + H); ctx.stroke(); ctx.setLineDash([]);
      ctx.fillText(m.label, X(m.t) + 3, pad.t + 10);
    }
  }
  /* Step series from a start time, a step length and values. */
  function steps(startIso, stepS, values) {
    const t0 = Date.parse(startIso); const pts = [];
    if (!isFinite(t0) || !Array.isArray(values)) return pts;
    values.forEach((v, i) => pts.push([t0 + i * stepS * 1000, v]));
    if (values.length) pts.push([t0 + values.length * stepS * 1000, values[values.length - 1]]);
    return pts;
  }
  return {draw, steps};
})();
