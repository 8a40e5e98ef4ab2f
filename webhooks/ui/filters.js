// The filter form every list view shares. Field names are the API's query parameters
// (worker/catalog.py SessionFilter), and the current values live in the URL hash, so a
// filtered view can be bookmarked and shared.

import { h } from "./dom.js";

const ANY = ["", "any"];

export const FIELDS = [
  { name: "since", label: "Since", type: "date", hint: "session start >= (UTC)" },
  { name: "until", label: "Until", type: "date", hint: "session start < (UTC)" },
  { name: "app_id", label: "App id", type: "number" },
  { name: "room_id", label: "Room" },
  { name: "user_id", label: "User" },
  { name: "agent_id", label: "Agent" },
  { name: "template", label: "Template" },
  {
    name: "provider",
    label: "Provider",
    options: [ANY, ["zego", "ZEGO voice"], ["zego_digital_human", "ZEGO digital human"],
      ["zego_live_digital_human", "ZEGO live digital human"], ["coze", "Coze"]],
  },
  {
    name: "state",
    label: "State",
    options: [ANY, ...["active", "ended", "starting", "recovering", "queued", "failed"].map((v) => [v, v])],
  },
  {
    name: "end_reason",
    label: "End reason",
    list: ["deleted", "user_absent", "disconnected", "kicked_out", "rtc_error", "login_failed", "push_failed", "pull_failed"],
  },
  { name: "has_interruptions", label: "Interrupted", options: [ANY, ["true", "yes"], ["false", "no"]] },
  { name: "has_exceptions", label: "Exceptions", options: [ANY, ["true", "yes"], ["false", "no"]] },
  { name: "min_turns", label: "Min turns", type: "number" },
  { name: "agent_instance_id", label: "Agent instance" },
];

export const NAMES = FIELDS.map((f) => f.name);

function control(field, value) {
  if (field.options) {
    return h(
      "select",
      { name: field.name, id: `f-${field.name}` },
      field.options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
    );
  }
  const input = h("input", {
    name: field.name,
    id: `f-${field.name}`,
    type: field.type || "text",
    value: value || "",
    title: field.hint || null,
    list: field.list ? `list-${field.name}` : null,
    min: field.type === "number" ? 0 : null,
    autocomplete: "off",
  });
  if (!field.list) return input;
  return [input, h("datalist", { id: `list-${field.name}` }, field.list.map((v) => h("option", { value: v })))];
}

// extra: more controls (sort, order, a search box) placed before the filters.
export function filterForm(params, onSubmit, { extra = [], submitLabel = "Apply" } = {}) {
  const form = h(
    "form",
    { class: "filters", id: "filters" },
    extra,
    FIELDS.map((field) =>
      h("label", { class: "field", for: `f-${field.name}` }, h("span", {}, field.label), control(field, params.get(field.name))),
    ),
    h(
      "div",
      { class: "field buttons" },
      h("button", { type: "submit", class: "primary" }, submitLabel),
      h("button", { type: "reset", class: "link", id: "filters-clear" }, "Clear"),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const out = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      if (typeof value === "string" && value.trim() !== "") out.set(name, value.trim());
    }
    onSubmit(out);
  });
  form.addEventListener("reset", (event) => {
    event.preventDefault();
    onSubmit(new URLSearchParams());
  });
  return form;
}

// The filter subset of a parameter set, ready for the API.
export function apiFilters(params) {
  const out = {};
  for (const name of NAMES) {
    const value = params.get(name);
    if (value) out[name] = value;
  }
  return out;
}

export function markInvalid(form, field) {
  for (const el of form.querySelectorAll(".invalid")) el.classList.remove("invalid");
  if (!field) return;
  const el = form.querySelector(`[name="${CSS.escape(field)}"]`);
  if (el) el.classList.add("invalid");
}
