// Small SVG charts drawn by hand: vertical bars, horizontal bars, grouped bars. Colours come
// from style.css classes (series-0, series-1, ...), so the charts follow the page's theme.

import { h, s, fmtNumber } from "./dom.js";

function niceStep(max, ticks) {
  const raw = max / ticks;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const residual = raw / magnitude;
  const nice = residual > 5 ? 10 : residual > 2 ? 5 : residual > 1 ? 2 : 1;
  return nice * magnitude;
}

function scale(values, ticks = 4) {
  const max = Math.max(0, ...values.filter((v) => typeof v === "number"));
  if (max <= 0) return { max: 1, ticks: [0, 1] };
  const step = niceStep(max, ticks);
  const top = Math.ceil(max / step) * step;
  const out = [];
  for (let v = 0; v <= top + step / 2; v += step) out.push(Number(v.toPrecision(12)));
  return { max: top, ticks: out };
}

function frame(width, height, label) {
  return s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    class: "chart",
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "xMinYMin meet",
  });
}

/** Grid lines and tick labels of a vertical value axis; returns the value -> y mapping. */
function valueAxis(svg, { left, width, top, plot, max, ticks, unit, format }) {
  const y = (v) => top + plot - (v / max) * plot;
  for (const t of ticks) {
    svg.append(
      s("line", { x1: left, x2: width - 8, y1: y(t), y2: y(t), class: "grid" }),
      s("text", { x: left - 6, y: y(t) + 4, class: "tick", "text-anchor": "end" }, format(t)),
    );
  }
  if (unit) svg.append(s("text", { x: 4, y: 12, class: "tick" }, unit));
  return y;
}

export function empty(message = "No data for these filters.") {
  return h("p", { class: "muted chart-empty" }, message);
}

// data: [{label, value, title?, missing?}]; format: value -> text.
export function barChart(data, { label = "chart", format = fmtNumber, height = 220, unit = "" } = {}) {
  if (!data.length) return empty();
  const left = 48;
  const bottom = 36;
  const top = 18;
  const slot = Math.max(28, Math.min(110, 560 / data.length));
  const width = left + slot * data.length + 12;
  const plot = height - top - bottom;
  const { max, ticks } = scale(data.map((d) => d.value));
  const svg = frame(width, height, label);
  const y = valueAxis(svg, { left, width, top, plot, max, ticks, unit, format });
  const showValues = data.length <= 24;
  data.forEach((d, i) => {
    const x = left + i * slot + slot * 0.18;
    const w = slot * 0.64;
    const group = s("g", { class: "bar", dataset: { label: d.label } });
    group.append(s("title", {}, d.title || `${d.label}: ${d.missing ? "n/a" : format(d.value)}`));
    if (d.missing || typeof d.value !== "number") {
      group.append(
        s("rect", { x, y: top + plot - 2, width: w, height: 2, class: "missing" }),
        s("text", { x: x + w / 2, y: top + plot - 6, class: "value", "text-anchor": "middle" }, "n/a"),
      );
    } else {
      const barHeight = Math.max(d.value > 0 ? 1 : 0, (d.value / max) * plot);
      group.append(s("rect", { x, y: top + plot - barHeight, width: w, height: barHeight, rx: 2, class: d.cls || "series-0" }));
      if (showValues) {
        group.append(
          s("text", { x: x + w / 2, y: top + plot - barHeight - 4, class: "value", "text-anchor": "middle" }, format(d.value)),
        );
      }
    }
    const every = Math.ceil(data.length / 14);
    if (i % every === 0) {
      group.append(s("text", { x: x + w / 2, y: height - bottom + 16, class: "tick", "text-anchor": "middle" }, d.label));
    }
    svg.append(group);
  });
  svg.append(s("line", { x1: left, x2: width - 8, y1: top + plot, y2: top + plot, class: "axis" }));
  return svg;
}

// data: [{label, value}] drawn as labelled horizontal bars, longest first.
export function hbarChart(data, { label = "chart", format = fmtNumber } = {}) {
  if (!data.length) return empty();
  const rows = [...data].sort((a, b) => b.value - a.value);
  const labelWidth = Math.min(200, 16 + 7.2 * Math.max(...rows.map((d) => String(d.label).length)));
  const barSpace = 300;
  const width = labelWidth + barSpace + 60;
  const row = 26;
  const height = rows.length * row + 8;
  const max = Math.max(1, ...rows.map((d) => d.value));
  const svg = frame(width, height, label);
  rows.forEach((d, i) => {
    const y = 4 + i * row;
    const w = Math.max(d.value > 0 ? 2 : 0, (d.value / max) * barSpace);
    svg.append(
      s(
        "g",
        { class: "hbar", dataset: { label: d.label } },
        s("title", {}, `${d.label}: ${format(d.value)}`),
        s("text", { x: labelWidth - 8, y: y + 16, class: "tick", "text-anchor": "end" }, d.label),
        s("rect", { x: labelWidth, y: y + 3, width: w, height: row - 8, rx: 2, class: `series-${i % 6}` }),
        s("text", { x: labelWidth + w + 6, y: y + 16, class: "value" }, format(d.value)),
      ),
    );
  });
  return svg;
}

// groups: [{label, values: {series: number|null}}]; series: names in legend order.
export function groupedBars(groups, series, { label = "chart", format = fmtNumber, height = 240, unit = "" } = {}) {
  const values = groups.flatMap((g) => series.map((k) => g.values[k]));
  if (!groups.length || values.every((v) => v === null || v === undefined)) return empty();
  const left = 52;
  const bottom = 40;
  const top = 24;
  const slot = 150;
  const width = left + slot * groups.length + 12;
  const plot = height - top - bottom;
  const { max, ticks } = scale(values);
  const svg = frame(width, height, label);
  const y = valueAxis(svg, { left, width, top, plot, max, ticks, unit, format });
  const bar = (slot - 30) / series.length;
  groups.forEach((g, gi) => {
    const x0 = left + gi * slot + 15;
    const group = s("g", { class: "bar-group", dataset: { label: g.label } });
    series.forEach((name, si) => {
      const v = g.values[name];
      const x = x0 + si * bar + 2;
      if (v === null || v === undefined) return;
      const barHeight = Math.max(v > 0 ? 1 : 0, (v / max) * plot);
      group.append(
        s(
          "rect",
          { x, y: top + plot - barHeight, width: bar - 4, height: barHeight, rx: 2, class: `series-${si}` },
          s("title", {}, `${g.label} ${name}: ${format(v)}`),
        ),
        s("text", { x: x + (bar - 4) / 2, y: top + plot - barHeight - 4, class: "value small", "text-anchor": "middle" }, format(v)),
      );
    });
    group.append(s("text", { x: x0 + (slot - 30) / 2, y: height - bottom + 16, class: "tick", "text-anchor": "middle" }, g.label));
    svg.append(group);
  });
  svg.append(s("line", { x1: left, x2: width - 8, y1: top + plot, y2: top + plot, class: "axis" }));
  const legend = h(
    "div",
    { class: "legend" },
    series.map((name, si) => h("span", {}, h("i", { class: `swatch series-${si}` }), name)),
  );
  return h("div", { class: "chart-wrap" }, svg, legend);
}
