// Charts drawn as SVG by hand: loss curves, metric-vs-parameter scatter plots, a confusion-matrix heat map and
// bar charts. A few hundred points at most, so SVG stays fast, is styled by app.css, and is easy to test.

const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea"];

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function ticks(lo, hi, count = 5) {
  if (lo === hi) return [lo];
  const step0 = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((st) => st >= step0);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(6)));
  return out;
}

function extent(values) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 1; hi += Math.abs(hi) * 0.1 || 1; }
  return [lo, hi];
}

// A line chart: series = [{name, points: [[x, y], ...]}]. Each series is one <path> with data-points = its count.
export function lineChart(series, { width = 640, height = 260, xLabel = "", yLabel = "" } = {}) {
  const pad = { l: 56, r: 16, t: 12, b: 36 };
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": yLabel });
  const all = series.flatMap((se) => se.points).filter((p) => Number.isFinite(p[1]));
  if (!all.length) return svg;
  const [x0, x1] = extent(all.map((p) => p[0]));
  const [y0, y1] = extent(all.map((p) => p[1]));
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  for (const t of ticks(y0, y1)) {
    svg.append(s("line", { x1: pad.l, x2: width - pad.r, y1: Y(t), y2: Y(t), class: "grid" }));
    svg.append(s("text", { x: pad.l - 6, y: Y(t) + 4, class: "tick", "text-anchor": "end" }, t));
  }
  for (const t of ticks(x0, x1).filter((v) => Number.isInteger(v) || x1 - x0 < 5)) {
    svg.append(s("text", { x: X(t), y: height - pad.b + 16, class: "tick", "text-anchor": "middle" }, t));
  }
  svg.append(s("text", { x: width / 2, y: height - 4, class: "axis", "text-anchor": "middle" }, xLabel));
  series.forEach((se, i) => {
    const pts = se.points.filter((p) => Number.isFinite(p[1]));
    if (!pts.length) return;
    const d = pts.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
    svg.append(s("path", { d, class: "series", stroke: COLORS[i % COLORS.length], "data-series": se.name,
      "data-points": pts.length }));
    if (pts.length < 60) {
      for (const p of pts) svg.append(s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: COLORS[i % COLORS.length] }));
    }
    svg.append(s("text", { x: width - pad.r - 4, y: pad.t + 14 + i * 16, class: "legend", "text-anchor": "end",
      fill: COLORS[i % COLORS.length] }, se.name));
  });
  return svg;
}

// Points [{x, y, label}] with a numeric x (a log axis when positive values span 10x or more) or categorical x.
export function scatterChart(points, { width = 300, height = 200, xLabel = "", yLabel = "" } = {}) {
  const pad = { l: 48, r: 12, t: 10, b: 40 };
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart scatter", role: "img",
    "aria-label": `${yLabel} vs ${xLabel}` });
  const pts = points.filter((p) => Number.isFinite(p.y));
  if (!pts.length) return svg;
  const numeric = pts.every((p) => typeof p.x === "number");
  let xs; let X;
  if (numeric) {
    const positive = pts.every((p) => p.x > 0);
    const [lo, hi] = extent(pts.map((p) => p.x));
    // Log-uniform parameters (lr, C, alpha) spread over decades: a linear axis piles their small values at 0.
    const log = positive && hi / lo >= 10;
    const f = log ? Math.log10 : (v) => v;
    const [a, b] = log ? [f(lo), f(hi)] : [lo, hi];
    X = (v) => pad.l + ((f(v) - a) / (b - a)) * (width - pad.l - pad.r);
    xs = [lo, hi]; // only the ends are labelled: sampled values crowd each other
  } else {
    xs = [...new Set(pts.map((p) => JSON.stringify(p.x)))];
    const step = (width - pad.l - pad.r) / xs.length;
    X = (v) => pad.l + step * (xs.indexOf(JSON.stringify(v)) + 0.5);
  }
  // A margin above and below, so the best (often the top) point's dot is not cut by the plot's edge.
  const [ylo, yhi] = extent(pts.map((p) => p.y));
  const margin = (yhi - ylo) * 0.08;
  const [y0, y1] = [ylo - margin, yhi + margin];
  const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  for (const t of ticks(y0, y1, 4)) {
    svg.append(s("line", { x1: pad.l, x2: width - pad.r, y1: Y(t), y2: Y(t), class: "grid" }));
    svg.append(s("text", { x: pad.l - 4, y: Y(t) + 4, class: "tick", "text-anchor": "end" }, t));
  }
  for (const v of xs) {
    const value = numeric ? v : JSON.parse(v);
    svg.append(s("text", { x: X(value), y: height - pad.b + 14, class: "tick", "text-anchor": "middle" },
      numeric ? Number(v.toPrecision(3)) : v));
  }
  svg.append(s("text", { x: width / 2, y: height - 4, class: "axis", "text-anchor": "middle" }, xLabel));
  for (const p of pts) {
    svg.append(s("circle", { cx: X(p.x), cy: Y(p.y), r: 4, class: p.best ? "dot best" : "dot" },
      s("title", {}, p.label)));
  }
  return svg;
}

// Rows = true class, columns = predicted class; darker = more rows. Counts written in each cell.
export function heatmap(matrix, labels, { cell = 44 } = {}) {
  const n = matrix.length;
  const names = labels.map((label) => String(label).slice(0, 24));
  const longest = Math.max(4, ...names.map((name) => name.length));
  // Room for whole labels: rows on the left, columns slanted above (a class name is wider than its cell).
  const left = Math.min(200, 16 + longest * 7.5); const top = Math.min(150, 30 + longest * 5.5);
  const width = left + n * cell + 8 + longest * 3; const height = top + n * cell + 8;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart heatmap", width, height,
    role: "img", "aria-label": "confusion matrix" });
  const max = Math.max(1, ...matrix.flat());
  svg.append(s("text", { x: left + (n * cell) / 2, y: 14, class: "axis", "text-anchor": "middle" }, "predicted"));
  svg.append(s("text", { x: 8, y: top - 8, class: "axis" }, "true ↓"));
  names.forEach((name, i) => {
    const x = left + i * cell + cell / 2; const y = top - 8;
    svg.append(s("text", { x, y, class: "tick col-label", transform: `rotate(-40 ${x} ${y})` }, name));
    svg.append(s("text", { x: left - 6, y: top + i * cell + cell / 2 + 4, class: "tick row-label", "text-anchor": "end" },
      name));
  });
  matrix.forEach((row, i) => row.forEach((v, j) => {
    const shade = v / max;
    svg.append(s("rect", { x: left + j * cell, y: top + i * cell, width: cell - 2, height: cell - 2,
      fill: `rgba(37, 99, 235, ${(0.08 + 0.92 * shade).toFixed(3)})`, class: i === j ? "diag" : "" }));
    svg.append(s("text", { x: left + j * cell + cell / 2 - 1, y: top + i * cell + cell / 2 + 4,
      "text-anchor": "middle", class: shade > 0.55 ? "cell light" : "cell" }, v));
  }));
  return svg;
}

// Horizontal bars: items = [{name, value, err}], longest first as given.
export function barChart(items, { width = 560, bar = 18 } = {}) {
  const left = 170; const right = 70;
  const height = items.length * (bar + 6) + 8;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart bars", role: "img",
    "aria-label": "feature importance" });
  const max = Math.max(1e-12, ...items.map((it) => Math.abs(it.value)));
  items.forEach((it, i) => {
    const y = 4 + i * (bar + 6);
    const w = (Math.max(0, it.value) / max) * (width - left - right);
    svg.append(s("text", { x: left - 6, y: y + bar - 5, class: "tick", "text-anchor": "end" }, it.name.slice(0, 24)));
    svg.append(s("rect", { x: left, y, width: Math.max(1, w), height: bar, class: "bar" }));
    svg.append(s("text", { x: left + w + 4, y: y + bar - 5, class: "tick" }, Number(it.value.toPrecision(3))));
  });
  return svg;
}
