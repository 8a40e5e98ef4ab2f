// The overview: /v1/stats for the current filters as figures and hand-drawn SVG charts.

import * as api from "./api.js";
import { h, fmtDuration, fmtNumber, fmtPercent } from "./dom.js";
import { barChart, hbarChart, groupedBars } from "./charts.js";
import { filterForm, apiFilters, markInvalid } from "./filters.js";

const LATENCY = [
  ["response_ms", "Response"],
  ["llm_ttft_ms", "LLM TTFT"],
  ["tts_first_frame_ms", "TTS first frame"],
  ["total_cost_ms", "Total"],
];

function kpi(label, value, note = "") {
  return h("div", { class: "kpi" }, h("div", { class: "kpi-value" }, value), h("div", { class: "kpi-label" }, label), note ? h("div", { class: "kpi-note" }, note) : null);
}

function card(title, id, body, note = "") {
  return h("section", { class: "card", id }, h("h2", {}, title), note ? h("p", { class: "muted small" }, note) : null, body);
}

function entries(obj) {
  return Object.entries(obj || {}).map(([label, value]) => ({ label, value: Number(value) }));
}

function money(amount, currency) {
  if (amount === null || amount === undefined) return "–";
  return `${Number(amount).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })} ${currency || ""}`.trim();
}

export async function renderOverview(main, params, ctx) {
  const root = h("section", { class: "view overview" });
  main.append(root);
  const form = filterForm(params, (next) => ctx.navigate("overview", next));
  root.append(h("h1", {}, "Overview"), h("details", { class: "filter-box", open: [...params.keys()].length > 0 }, h("summary", {}, "Filters"), form));

  let stats;
  try {
    stats = await api.get("/v1/stats", apiFilters(params));
  } catch (error) {
    if (error instanceof api.ApiError && error.status === 400) markInvalid(form, error.field);
    throw error;
  }
  if (!ctx.current()) return;

  const duration = stats.duration_seconds || {};
  const cost = stats.cost || {};
  root.append(
    h(
      "div",
      { class: "kpis", id: "kpis" },
      kpi("sessions", fmtNumber(stats.sessions), `${fmtNumber(stats.ended_sessions)} ended`),
      kpi("talk time", fmtDuration(duration.total), `median ${fmtDuration(duration.median)} · p90 ${fmtDuration(duration.p90)}`),
      kpi("turns", fmtNumber(stats.turns), `${fmtNumber(stats.user_turns)} user · ${fmtNumber(stats.agent_turns)} agent`),
      kpi("interruption rate", fmtPercent(stats.interruption_rate), `${fmtNumber(stats.sessions_with_interruptions)} sessions with interruptions`),
      kpi("exceptions", fmtNumber(Object.values(stats.exceptions || {}).reduce((a, b) => a + b, 0))),
      kpi("estimated cost", money(cost.total, cost.currency), Object.keys(cost.rates || {}).length ? "" : "no rates configured"),
    ),
  );

  const perDay = (stats.per_day || []).map((d) => ({
    label: d.date.slice(5),
    value: d.sessions,
    title: `${d.date}: ${fmtNumber(d.sessions)} sessions, ${fmtNumber(d.minutes, 1)} minutes`,
  }));
  const minutes = (stats.per_day || []).map((d) => ({ label: d.date.slice(5), value: d.minutes, title: `${d.date}: ${fmtNumber(d.minutes, 1)} minutes`, cls: "series-1" }));
  const latency = stats.latency || {};
  const groups = LATENCY.filter(([key]) => latency[key]).map(([key, label]) => ({
    label: `${label} (${fmtNumber(latency[key].count)})`,
    values: { p50: latency[key].p50, p90: latency[key].p90, p99: latency[key].p99 },
  }));

  root.append(
    h(
      "div",
      { class: "grid" },
      card("Sessions per day", "chart-per-day", barChart(perDay, { label: "sessions per day" }), "By session start, UTC."),
      card("Minutes per day", "chart-minutes", barChart(minutes, { label: "minutes per day", format: (v) => fmtNumber(v, 1) })),
      card("End reasons", "chart-end-reasons", hbarChart(entries(stats.end_reasons), { label: "end reasons" })),
      card("Latency percentiles", "chart-latency", groupedBars(groups, ["p50", "p90", "p99"], { label: "latency percentiles", unit: "ms" }), "Count of measurements in brackets."),
      card("Exceptions by family", "chart-exceptions", hbarChart(entries(stats.exceptions), { label: "exceptions by family" })),
      card("Deletion codes", "chart-deletions", hbarChart(entries(stats.deletion_codes), { label: "deletion codes" })),
    ),
  );
  if (cost.by_provider && Object.keys(cost.by_provider).length) {
    root.append(
      card(
        "Cost by provider",
        "cost",
        hbarChart(entries(cost.by_provider), { label: "cost by provider", format: (v) => money(v, cost.currency) }),
        Object.entries(cost.rates || {}).map(([p, r]) => `${p}: ${r} ${cost.currency || ""}/min`).join(" · "),
      ),
    );
  }
}
