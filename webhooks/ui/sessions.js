// The sessions table: every filter, sort by start or duration, keyset paging with next_cursor.

import * as api from "./api.js";
import { h, fmtTime, fmtDuration, fmtNumber } from "./dom.js";
import { filterForm, apiFilters, markInvalid } from "./filters.js";

const SORTS = [
  ["started_at", "Start time"],
  ["duration", "Duration"],
];
const ORDERS = [
  ["desc", "Newest / longest first"],
  ["asc", "Oldest / shortest first"],
];
const LIMITS = ["25", "50", "100", "200"];

export let lastListHash = "#/sessions";

function select(name, label, options, value) {
  return h(
    "label",
    { class: "field", for: `f-${name}` },
    h("span", {}, label),
    h(
      "select",
      { name, id: `f-${name}` },
      options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
    ),
  );
}

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}` }, state);
}

function counter(value, cls) {
  return value ? h("span", { class: `count ${cls}` }, fmtNumber(value)) : h("span", { class: "muted" }, "0");
}

function row(s) {
  const href = `#/session/${encodeURIComponent(s.id)}`;
  return h(
    "tr",
    { dataset: { sessionId: s.id }, class: s.state === "active" ? "live" : null },
    h("td", {}, h("a", { href, class: "row-link" }, fmtTime(s.started_at))),
    h("td", { class: "num" }, s.state === "active" ? h("span", { class: "badge state-active" }, "live") : fmtDuration(s.duration_seconds)),
    h("td", {}, h("div", {}, s.agent_name || s.agent_id || "–"), h("div", { class: "sub" }, s.room_id || "")),
    h("td", {}, s.user_id || "–"),
    h("td", {}, h("div", {}, s.provider || "zego"), h("div", { class: "sub" }, s.template || "")),
    h("td", { class: "num" }, s.app_id ?? "–"),
    h("td", {}, stateBadge(s.state), s.end_reason ? h("div", { class: "sub" }, s.end_reason, s.end_code ? ` (${s.end_code})` : "") : null),
    h("td", { class: "num" }, fmtNumber(s.turns)),
    h("td", { class: "num" }, counter(s.interruptions, "warn")),
    h("td", { class: "num" }, counter(s.exceptions, "bad")),
    h("td", { class: "num" }, counter(s.recreations, "info")),
  );
}

export async function renderSessions(main, params, ctx) {
  lastListHash = window.location.hash || "#/sessions";
  const root = h("section", { class: "view sessions", dataset: { cursor: params.get("cursor") || "" } });
  main.append(root);

  const go = (next) => ctx.navigate("sessions", next);
  const sort = params.get("sort") || "started_at";
  const order = params.get("order") || "desc";
  const limit = params.get("limit") || "50";
  const form = filterForm(params, go, {
    extra: [select("sort", "Sort by", SORTS, sort), select("order", "Order", ORDERS, order), select("limit", "Per page", [...new Set([...LIMITS, limit])].map((l) => [l, l]), limit)],
  });
  root.append(h("h1", {}, "Sessions"), form);

  const status = h("p", { class: "muted", id: "table-status" }, "Loading…");
  root.append(status);

  let page;
  try {
    page = await api.get("/v1/sessions", { ...apiFilters(params), sort, order, limit, cursor: params.get("cursor") });
  } catch (error) {
    status.remove();
    if (error instanceof api.ApiError && error.status === 400) markInvalid(form, error.field);
    throw error;
  }
  if (!ctx.current()) return;

  const sessions = page.sessions || [];
  const rows = sessions.map((s) => (s.summary ? { ...s, ...s.summary } : s));
  status.textContent = rows.length
    ? `${rows.length} session${rows.length === 1 ? "" : "s"} on this page${params.get("cursor") ? " (not the first page)" : ""}.`
    : "No sessions match these filters.";

  const head = ["Started", "Duration", "Agent · room", "User", "Provider · template", "App", "State", "Turns", "Interrupted", "Exceptions", "Recreated"];
  const numeric = new Set(["Duration", "App", "Turns", "Interrupted", "Exceptions", "Recreated"]);
  const table = h(
    "table",
    { class: "data", id: "sessions-table" },
    h("thead", {}, h("tr", {}, head.map((t) => h("th", { class: numeric.has(t) ? "num" : null, scope: "col" }, t)))),
    h("tbody", {}, rows.map(row)),
  );
  table.addEventListener("click", (event) => {
    const tr = event.target.closest("tr[data-session-id]");
    if (!tr || event.target.closest("a")) return;
    ctx.navigate("session", new URLSearchParams(), tr.dataset.sessionId);
  });
  if (rows.length) root.append(h("div", { class: "table-wrap" }, table));

  const pager = h("div", { class: "pager" });
  if (params.get("cursor")) {
    const first = new URLSearchParams(params);
    first.delete("cursor");
    pager.append(h("button", { type: "button", class: "secondary", onclick: () => go(first) }, "« First page"));
  }
  if (page.next_cursor) {
    const next = new URLSearchParams(params);
    next.set("cursor", page.next_cursor);
    pager.append(h("button", { type: "button", class: "secondary", id: "next-page", dataset: { cursor: page.next_cursor }, onclick: () => go(next) }, "Next page »"));
  }
  root.append(pager);
}
