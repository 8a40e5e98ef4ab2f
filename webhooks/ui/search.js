// Full-text search over what was said, with the turns around each hit.

import * as api from "./api.js";
import { h, fmtTime } from "./dom.js";
import { filterForm, apiFilters, markInvalid } from "./filters.js";

function highlighted(text, query) {
  const terms = query.split(/\s+/).map((t) => t.replace(/^"|"$/g, "")).filter((t) => t.length > 0);
  if (!terms.length) return [text];
  const lower = text.toLowerCase();
  const out = [];
  let at = 0;
  while (at < text.length) {
    let best = -1;
    let len = 0;
    for (const term of terms) {
      const i = lower.indexOf(term.toLowerCase(), at);
      if (i !== -1 && (best === -1 || i < best)) {
        best = i;
        len = term.length;
      }
    }
    if (best === -1) break;
    if (best > at) out.push(text.slice(at, best));
    out.push(h("mark", {}, text.slice(best, best + len)));
    at = best + len;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

function line(turn, cls, query) {
  return h(
    "div",
    { class: `hit-line ${turn.speaker === "user" ? "user" : "agent"} ${cls}` },
    h("span", { class: "who" }, turn.speaker === "user" ? "user" : "agent"),
    h("span", { class: "said" }, query ? highlighted(turn.text || "", query) : turn.text || ""),
    turn.interrupted ? h("span", { class: "badge warn", title: turn.played_text ? `played: ${turn.played_text}` : "" }, "interrupted") : null,
  );
}

export async function renderSearch(main, params, ctx) {
  const root = h("section", { class: "view search" });
  main.append(root);
  const q = params.get("q") || "";
  const box = h("label", { class: "field wide", for: "f-q" }, h("span", {}, "Words said"), h("input", { type: "search", name: "q", id: "f-q", value: q, placeholder: "e.g. refund, umbrella, 退款", autocomplete: "off" }));
  const form = filterForm(params, (next) => ctx.navigate("search", next), { extra: [box], submitLabel: "Search" });
  root.append(h("h1", {}, "Search"), form);
  if (!q) {
    root.append(h("p", { class: "muted" }, "Search user and agent turns; the filters narrow the sessions searched."));
    return;
  }
  let found;
  try {
    found = await api.get("/v1/search", { q, ...apiFilters(params) });
  } catch (error) {
    if (error instanceof api.ApiError && error.status === 400) markInvalid(form, error.field);
    throw error;
  }
  if (!ctx.current()) return;
  const hits = found.hits || [];
  root.append(h("p", { class: "muted" }, hits.length ? `${hits.length} matching turn${hits.length === 1 ? "" : "s"}.` : "Nothing said matches."));
  root.append(
    h(
      "ol",
      { class: "hits" },
      hits.map((hit) => {
        const s = hit.session || {};
        return h(
          "li",
          { class: "hit" },
          h(
            "div",
            { class: "hit-head" },
            h("a", { href: `#/session/${encodeURIComponent(s.id)}` }, s.agent_name || s.agent_id || s.id),
            h("span", { class: "muted" }, ` · ${s.room_id || ""} · ${s.user_id || ""} · ${fmtTime(s.started_at)}`),
          ),
          (hit.before || []).map((t) => line(t, "context", "")),
          line(hit.turn, "match", q),
          (hit.after || []).map((t) => line(t, "context", "")),
        );
      }),
    ),
  );
  // Sessions whose post-call analysis summary matches (docs/analysis.md).
  const summaries = found.summaries || [];
  if (summaries.length) {
    root.append(
      h("h2", {}, `Matching summaries (${summaries.length})`),
      h(
        "ol",
        { class: "hits summaries" },
        summaries.map((m) => {
          const s = m.session || {};
          return h(
            "li",
            { class: "hit" },
            h("div", { class: "hit-head" }, h("a", { href: `#/session/${encodeURIComponent(s.id)}` }, s.agent_name || s.agent_id || s.id), h("span", { class: "muted" }, ` · ${m.outcome || ""} · ${fmtTime(s.started_at)}`)),
            h("p", {}, m.summary || ""),
          );
        }),
      ),
    );
  }
}
