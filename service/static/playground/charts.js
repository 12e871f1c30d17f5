// Hand-written SVG: a line chart, a heat map and the autograd graph. Every drawn datum carries its
// number in data-* attributes (and a <title> for hover), so what is plotted can be read back and
// checked against the API's response.

const SVG = "http://www.w3.org/2000/svg";

function el(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function titled(node, text) {
  el("title", {}, node).textContent = text;
  return node;
}

export function formatNumber(value) {
  if (typeof value === "string") return value; // "NaN", "Infinity" travel as strings
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  return magnitude >= 1e4 || magnitude < 1e-3 ? value.toExponential(3) : String(Number(value.toPrecision(5)));
}

function niceTicks(low, high, count = 5) {
  if (!(high > low)) return [low];
  const rough = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  const ticks = [];
  for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function extent(values) {
  const finite = values.filter(Number.isFinite);
  if (!finite.length) return [0, 1];
  let low = Math.min(...finite);
  let high = Math.max(...finite);
  if (low === high) {
    low -= Math.abs(low) * 0.1 || 1;
    high += Math.abs(high) * 0.1 || 1;
  }
  return [low, high];
}

// Charts are drawn at their container's width (so text keeps its size on a phone) and drawn again
// when that width changes.
const resized = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const chart = entry.target.chart;
    if (chart && Math.abs(entry.contentRect.width - chart.width) > 24) lineChart(entry.target, ...chart.args);
  }
});

// series: [{name, points: [[x, y], ...]}]; each series is drawn in its own colour class, the legend
// below the plot.
export function lineChart(container, series, options = {}) {
  const { xLabel = "x", yLabel = "", label = "chart" } = options;
  container.replaceChildren();
  const width = Math.round(Math.max(300, Math.min(760, container.clientWidth || 720)));
  const plotHeight = Math.round(Math.max(200, Math.min(320, width * 0.45)));
  const legendTop = plotHeight + 8;
  const height = legendTop + series.length * 18 + 4;
  container.chart = { width, args: [series, options] };
  resized.observe(container);
  const margin = { left: 56, right: 14, top: 12, bottom: 44 };
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "line-chart" },
    container);
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const [x0, x1] = extent(xs);
  const [y0, y1] = extent(ys);
  const sx = (x) => margin.left + ((x - x0) / (x1 - x0)) * (width - margin.left - margin.right);
  const sy = (y) => plotHeight - margin.bottom - ((y - y0) / (y1 - y0)) * (plotHeight - margin.top - margin.bottom);

  const axes = el("g", { class: "axes" }, svg);
  for (const t of niceTicks(y0, y1)) {
    el("line", { x1: margin.left, x2: width - margin.right, y1: sy(t), y2: sy(t), class: "grid" }, axes);
    el("text", { x: margin.left - 6, y: sy(t) + 4, "text-anchor": "end" }, axes).textContent = formatNumber(t);
  }
  for (const t of niceTicks(x0, x1, Math.max(3, Math.floor(width / 90)))) {
    el("line", { x1: sx(t), x2: sx(t), y1: plotHeight - margin.bottom, y2: plotHeight - margin.bottom + 5 }, axes);
    el("text", { x: sx(t), y: plotHeight - margin.bottom + 18, "text-anchor": "middle" }, axes).textContent =
      formatNumber(t);
  }
  el("line", { x1: margin.left, x2: width - margin.right, y1: plotHeight - margin.bottom,
    y2: plotHeight - margin.bottom, class: "axis" }, axes);
  el("text", { x: (margin.left + width - margin.right) / 2, y: plotHeight - 8, "text-anchor": "middle",
    class: "label" }, axes).textContent = xLabel;
  if (yLabel) {
    el("text", { x: 14, y: margin.top + 4, class: "label" }, axes).textContent = yLabel;
  }

  series.forEach((s, index) => {
    const group = el("g", { class: `series series-${index % 4}`, "data-series": s.name }, svg);
    const sorted = s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]))
      .sort((a, b) => a[0] - b[0]);
    el("polyline", { points: sorted.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" "), fill: "none" }, group);
    if (s.points.length <= 2000) {
      for (const [x, y] of s.points) {
        if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
        titled(el("circle", { cx: sx(x), cy: sy(y), r: 3.5, "data-x": x, "data-y": y }, group),
          `${s.name}: x = ${formatNumber(x)}, y = ${formatNumber(y)}`);
      }
    }
  });
  const legend = el("g", { class: "legend" }, svg);
  series.forEach((s, index) => {
    const y = legendTop + 9 + index * 18;
    el("line", { x1: margin.left, x2: margin.left + 24, y1: y, y2: y, class: `series-${index % 4} swatch` }, legend);
    el("text", { x: margin.left + 30, y: y + 4 }, legend).textContent = s.name;
  });
  return svg;
}

// A diverging colour for v in [-limit, limit]: blue below zero, red above, the background at zero.
function cellColour(value, limit) {
  if (!Number.isFinite(value)) return "#888";
  if (value === 0) return "hsl(220 8% 88%)";
  const t = limit > 0 ? Math.max(-1, Math.min(1, value / limit)) : 0;
  const hue = t < 0 ? 220 : 5;
  return `hsl(${hue} 75% ${Math.round(96 - 50 * Math.abs(t))}%)`;
}

// blocks: [{label, rows, cols, values (row-major)}]; the readout shows the value under the pointer
// or the keyboard cursor (arrow keys on the focused map).
export function heatMap(container, blocks, readout) {
  container.replaceChildren();
  const cell = Math.max(6, Math.min(36, Math.floor(560 / Math.max(...blocks.map((b) => Math.max(b.rows, b.cols))))));
  const gap = 36;
  const top = 22;
  let width = 0;
  const offsets = blocks.map((b) => {
    const left = width;
    width += b.cols * cell + gap;
    return left;
  });
  const height = top + Math.max(...blocks.map((b) => b.rows * cell)) + 4;
  const svg = el("svg", { viewBox: `0 0 ${Math.max(width - gap, 1)} ${height}`, width: Math.max(width - gap, 1),
    height, class: "heatmap", tabindex: 0, role: "img",
    "aria-label": `heat map: ${blocks.map((b) => `${b.label}, ${b.rows} by ${b.cols}`).join("; ")}` }, container);
  const limit = Math.max(...blocks.flatMap((b) => b.values.filter(Number.isFinite).map(Math.abs)), 0);
  const cells = [];
  let cursor = 0; // the keyboard's cell; pointing at a cell moves it there too
  const show = (c) => {
    cursor = cells.indexOf(c);
    for (const other of cells) other.rect.classList.remove("current");
    c.rect.classList.add("current");
    readout.textContent = `${c.block.label}[${c.row}, ${c.col}] = ${formatNumber(c.value)}`;
  };
  blocks.forEach((b, blockIndex) => {
    const group = el("g", { class: "block", "data-block": b.label, transform: `translate(${offsets[blockIndex]} 0)` },
      svg);
    el("text", { x: 0, y: 14, class: "label" }, group).textContent = b.label;
    for (let row = 0; row < b.rows; row++) {
      for (let col = 0; col < b.cols; col++) {
        const value = b.values[row * b.cols + col];
        const rect = el("rect", { x: col * cell, y: top + row * cell, width: cell - 1, height: cell - 1,
          fill: cellColour(value, limit), "data-row": row, "data-col": col, "data-value": value }, group);
        titled(rect, `${b.label}[${row}, ${col}] = ${formatNumber(value)}`);
        const entry = { rect, row, col, value, block: b, blockIndex };
        rect.addEventListener("pointerenter", () => show(entry));
        cells.push(entry);
      }
    }
  });
  svg.addEventListener("focus", () => show(cells[cursor]));
  svg.addEventListener("keydown", (event) => {
    const here = cells[cursor];
    const find = (blockIndex, row, col) => cells.findIndex(
      (c) => c.blockIndex === blockIndex && c.row === row && c.col === col);
    const moves = {
      ArrowLeft: () => find(here.blockIndex, here.row, here.col - 1),
      ArrowRight: () => find(here.blockIndex, here.row, here.col + 1),
      ArrowUp: () => find(here.blockIndex, here.row - 1, here.col),
      ArrowDown: () => find(here.blockIndex, here.row + 1, here.col),
      PageDown: () => find(here.blockIndex + 1, 0, 0),
      PageUp: () => find(here.blockIndex - 1, 0, 0),
    };
    if (!moves[event.key]) return;
    event.preventDefault();
    const next = moves[event.key]();
    if (next >= 0) show(cells[next]);
  });
  return svg;
}

// ---- the autograd graph ----

// The response's graph is one nested tree per output: {name, id, variable?, repeat?, next_functions:
// [[child | null, index], ...]}. A node shared by two parents is expanded once and then referred to
// by id (repeat: true), so the tree is read back into a graph keyed by id.
export function collectGraph(roots) {
  const nodes = new Map();
  const edges = [];
  const visit = (entry) => {
    if (!nodes.has(entry.id)) nodes.set(entry.id, { id: entry.id, name: entry.name, variable: entry.variable,
      truncated: Boolean(entry.truncated), children: [] });
    if (entry.repeat) return;
    for (const [child, inputIndex] of entry.next_functions || []) {
      if (!child) continue; // an input that needs no gradient
      visit(child);
      nodes.get(entry.id).children.push(child.id);
      edges.push({ from: entry.id, to: child.id, index: inputIndex });
    }
  };
  for (const root of roots) if (root) visit(root);
  return { nodes, edges, roots: roots.filter(Boolean).map((r) => r.id) };
}

export function graphPicture(container, roots) {
  container.replaceChildren();
  const { nodes, edges } = collectGraph(roots);
  // Layers by longest path from an output, so every edge points down the page.
  const depth = new Map();
  const order = [...nodes.keys()];
  for (const root of roots.filter(Boolean)) depth.set(root.id, 0);
  for (let changed = true, rounds = 0; changed && rounds <= nodes.size; rounds++) {
    changed = false;
    for (const edge of edges) {
      const next = (depth.get(edge.from) ?? 0) + 1;
      if ((depth.get(edge.to) ?? -1) < next) {
        depth.set(edge.to, next);
        changed = true;
      }
    }
  }
  const layers = [];
  for (const id of order) (layers[depth.get(id) ?? 0] ??= []).push(id);
  const charWidth = 7.6;
  const boxHeight = 40;
  const rowGap = 34;
  const columnGap = 18;
  const size = (node) => Math.max(node.name.length, (node.variable || "").length + 11) * charWidth + 20;
  const position = new Map();
  let width = 0;
  layers.forEach((ids, layer) => {
    let x = 8;
    for (const id of ids) {
      const w = size(nodes.get(id));
      position.set(id, { x, y: 8 + layer * (boxHeight + rowGap), w });
      x += w + columnGap;
    }
    width = Math.max(width, x);
  });
  // Centre each layer on the widest one.
  layers.forEach((ids) => {
    const last = position.get(ids.at(-1));
    const shift = (width - (last.x + last.w + columnGap)) / 2;
    for (const id of ids) position.get(id).x += shift;
  });
  const height = 16 + layers.length * (boxHeight + rowGap) - rowGap;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "autograd-graph", role: "img",
    "aria-label": `autograd graph of ${nodes.size} nodes: ${[...nodes.values()].map((n) => n.name).join(", ")}` },
  container);
  const defs = el("defs", {}, svg);
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7,
    markerHeight: 7, orient: "auto-start-reverse" }, defs);
  el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }, marker);
  for (const edge of edges) {
    const a = position.get(edge.from);
    const b = position.get(edge.to);
    titled(el("line", { x1: a.x + a.w / 2, y1: a.y + boxHeight, x2: b.x + b.w / 2, y2: b.y, class: "edge",
      "marker-end": "url(#arrow)", "data-from": edge.from, "data-to": edge.to }, svg),
    `${nodes.get(edge.from).name}.next_functions -> ${nodes.get(edge.to).name} (input ${edge.index})`);
  }
  for (const node of nodes.values()) {
    const { x, y, w } = position.get(node.id);
    const leaf = node.name === "AccumulateGrad";
    const group = el("g", { class: leaf ? "node leaf" : "node", "data-id": node.id, "data-name": node.name,
      ...(node.variable ? { "data-variable": node.variable } : {}) }, svg);
    el("rect", { x, y, width: w, height: boxHeight, rx: 6 }, group);
    el("text", { x: x + w / 2, y: y + (leaf && node.variable ? 17 : 25), "text-anchor": "middle" }, group)
      .textContent = node.name + (node.truncated ? " …" : "");
    if (leaf && node.variable) {
      el("text", { x: x + w / 2, y: y + 33, "text-anchor": "middle", class: "variable" }, group).textContent =
        `variable: ${node.variable}`;
    }
  }
  return svg;
}
