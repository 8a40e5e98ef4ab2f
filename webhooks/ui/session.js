// One conversation as a chat: the user on the right, the agent on the left, an interrupted
// agent turn showing what was played and, struck through, what the user cut off; exceptions,
// recreated agents and the end of the session as system lines; response time per round.

import * as api from "./api.js";
import { h, fmtTime, fmtDuration, fmtOffset, fmtMs, fmtNumber } from "./dom.js";
import { barChart } from "./charts.js";
import { lastListHash, stateBadge } from "./sessions.js";

function fact(label, value) {
  return h("div", {}, h("dt", {}, label), h("dd", {}, value === null || value === undefined || value === "" ? "–" : value));
}

// Seconds since the session started: the API's offset_seconds, or computed from spoken_at.
function offsetOf(turn, start) {
  if (typeof turn.offset_seconds === "number") return turn.offset_seconds;
  if (!turn.spoken_at || !start) return null;
  return (new Date(turn.spoken_at) - new Date(start)) / 1000;
}

// The cut part is what the agent had ready but never said: the text after the played prefix.
export function splitInterrupted(text, played) {
  if (played === null || played === undefined) return { played: null, cut: text };
  if (text.startsWith(played)) return { played, cut: text.slice(played.length) };
  const trimmed = played.trim();
  if (trimmed && text.startsWith(trimmed)) return { played: trimmed, cut: text.slice(trimmed.length) };
  return { played, cut: text }; // ZEGO's played text is not a prefix: show both whole
}

function bubble(turn, start) {
  const speaker = turn.speaker === "user" ? "user" : "agent";
  const body = h("div", { class: "bubble" });
  const meta = h(
    "div",
    { class: "meta" },
    h("span", {}, speaker === "user" ? turn.user_id || "user" : "agent"),
    h("span", {}, `round ${turn.round}`),
    h("span", { title: turn.spoken_at || "" }, fmtOffset(offsetOf(turn, start))),
  );
  if (turn.source === "say") meta.append(h("span", { class: "badge", title: "POST /v1/sessions/{id}/say" }, "said by the app"));
  if (turn.source === "repaired") meta.append(h("span", { class: "badge", title: "no callback brought it: filled from the agent's context before its deletion" }, "repaired"));
  if (speaker === "agent" && turn.interrupted) {
    const { played, cut } = splitInterrupted(turn.text || "", turn.played_text);
    if (played) body.append(h("span", { class: "played" }, played));
    if (cut) body.append(h("del", { class: "cut", title: "not played: the user cut in" }, cut));
    meta.append(h("span", { class: "badge warn" }, played === null ? "interrupted (played part unknown)" : "interrupted"));
  } else {
    body.append(turn.text || "");
  }
  return h(
    "div",
    {
      class: `turn ${speaker}${turn.interrupted ? " interrupted" : ""}`,
      dataset: { round: turn.round, instance: turn.agent_instance_id },
    },
    body,
    meta,
  );
}

function systemLine(kind, text, at, start) {
  const offset = at && start ? fmtOffset((new Date(at) - new Date(start)) / 1000) : "";
  return h("div", { class: `system ${kind}`, role: "note" }, h("span", { class: "text" }, text), offset ? h("span", { class: "when" }, offset) : null);
}

export function chat(turns, detail, start, rounds = []) {
  const box = h("div", { class: "chat", id: "chat" });
  const gaps = new Map(rounds.filter((r) => r.status !== "complete").map((r) => [`${r.agent_instance_id}|${r.round}`, r.status]));
  const gapLine = (key) => {
    const [, round] = key.split("|");
    const what = gaps.get(key) === "missing" ? "missing: no text reached roomwarden" : "partial: a turn is missing";
    return systemLine("gap", `Round ${round} ${what}`, null, start);
  };
  const pending = new Map();
  for (const e of detail.exceptions || []) {
    const key = `${e.agent_instance_id}|${e.round}`;
    if (!pending.has(key)) pending.set(key, []);
    pending.get(key).push(e);
  }
  const lastOfRound = new Map();
  turns.forEach((t, i) => lastOfRound.set(`${t.agent_instance_id}|${t.round}`, i));
  const exceptionLine = (e) =>
    systemLine("exception", `Exception ${e.code}${e.family ? ` (${e.family})` : ""}: ${e.message || ""}`, e.at, start);

  let instance = null;
  turns.forEach((turn, i) => {
    if (instance !== null && turn.agent_instance_id !== instance) {
      box.append(systemLine("recreated", `Agent recreated: new instance ${turn.agent_instance_id}`, turn.spoken_at, start));
    } else if (instance === null && turn.new_instance && i > 0) {
      box.append(systemLine("recreated", `New agent instance ${turn.agent_instance_id}`, turn.spoken_at, start));
    }
    instance = turn.agent_instance_id;
    box.append(bubble(turn, start));
    const key = `${turn.agent_instance_id}|${turn.round}`;
    if (lastOfRound.get(key) === i && pending.has(key)) {
      for (const e of pending.get(key)) box.append(exceptionLine(e));
      pending.delete(key);
    }
    if (lastOfRound.get(key) === i && gaps.has(key)) {
      box.append(gapLine(key));
      gaps.delete(key);
    }
  });
  for (const key of gaps.keys()) box.append(gapLine(key)); // Rounds without a single turn
  const rest = [...pending.values()].flat().sort((a, b) => String(a.at).localeCompare(String(b.at)));
  for (const e of rest) box.append(exceptionLine(e));
  for (const inst of detail.instances || []) {
    if (inst.deleted_at && (detail.instances.length > 1 || detail.state !== "ended")) {
      box.append(systemLine("ended", `Instance ${inst.agent_instance_id} deleted (code ${inst.delete_code ?? "?"})`, inst.deleted_at, start));
    }
  }
  if (detail.state === "ended") {
    const why = detail.end_reason ? `${detail.end_reason}${detail.end_code !== null && detail.end_code !== undefined ? ` (${detail.end_code})` : ""}` : "";
    box.append(systemLine("ended", `Session ended${why ? `: ${why}` : ""}`, detail.ended_at, start));
  } else if (detail.state === "active") {
    box.append(systemLine("live", "The session is still live.", null, start));
  }
  if (!turns.length) box.append(h("p", { class: "muted" }, "No turns recorded."));
  return box;
}

function latencyChart(rounds) {
  const data = (rounds || []).map((r, i) => ({
    label: `R${i + 1}`,
    value: r.response_ms,
    missing: r.response_ms === null || r.response_ms === undefined,
    title: `round ${r.round} (${r.agent_instance_id}): ${r.response_ms === null || r.response_ms === undefined ? "not measured" : fmtMs(Math.round(r.response_ms))}`,
    cls: r.response_ms > 1500 ? "series-warn" : "series-0",
  }));
  return barChart(data, { label: "response time per round", format: (v) => fmtNumber(v), unit: "ms", height: 200 });
}

function timelineTable(timeline, start) {
  if (!timeline || !timeline.length) return null;
  return h(
    "details",
    { class: "timeline" },
    h("summary", {}, `Timeline (${timeline.length} events)`),
    h(
      "table",
      { class: "data compact" },
      h("thead", {}, h("tr", {}, ["At", "Event", "Round", "Detail"].map((t) => h("th", { scope: "col" }, t)))),
      h(
        "tbody",
        {},
        timeline.map((e) =>
          h(
            "tr",
            {},
            h("td", { title: e.at || "" }, fmtOffset(e.at && start ? (new Date(e.at) - new Date(start)) / 1000 : null)),
            h("td", {}, e.event),
            h("td", { class: "num" }, e.round ?? ""),
            h("td", { class: "detail" }, e.detail === null || e.detail === undefined ? "" : typeof e.detail === "string" ? e.detail : JSON.stringify(e.detail)),
          ),
        ),
      ),
    ),
  );
}

// Post-call analysis by the deployment's own LLM (docs/analysis.md): summary, outcome, data.
function analysisBlock(a) {
  if (!a) return null;
  const outcome = a.outcome ? `${a.outcome}${a.outcome_reason ? ` (${a.outcome_reason})` : ""}` : null;
  const usage = a.usage ? `${fmtNumber(a.usage.total_tokens)} tokens` : null;
  return h(
    "section",
    { class: "analysis", id: "analysis" },
    h("h2", {}, "Analysis"),
    a.status === "failed" ? h("p", { class: "muted" }, `Failed: ${a.error || "unknown error"}`) : null,
    a.summary ? h("p", { class: "analysis-summary" }, a.summary) : null,
    outcome ? h("p", {}, h("strong", {}, "Outcome: "), outcome) : null,
    a.data && Object.keys(a.data).length ? h("pre", { class: "small" }, JSON.stringify(a.data, null, 2)) : null,
    h("p", { class: "muted small" }, [a.model, a.config_version, usage].filter(Boolean).join(" · ")),
  );
}

export async function renderSession(main, id, ctx) {
  const root = h("section", { class: "view session" });
  main.append(root);
  root.append(h("p", {}, h("a", { href: lastListHash, class: "back" }, "« Sessions")));
  if (!id) throw new Error("No session id in the address.");
  const path = `/v1/sessions/${encodeURIComponent(id)}`;
  const [detail, transcript] = await Promise.all([api.get(path), api.get(`${path}/transcript`, { format: "json" })]);
  if (!ctx.current()) return;

  const summary = { ...detail, ...(detail.summary || {}) };
  const start = transcript.started_at || summary.started_at || detail.started_at || detail.created_at;
  const turns = transcript.turns || [];
  const interruptions = detail.summary?.interruptions ?? turns.filter((t) => t.speaker !== "user" && t.interrupted).length;
  const exceptions = detail.summary?.exceptions ?? (detail.exceptions || []).length;
  const instances = detail.summary?.instances ?? (detail.instances || []).length;

  root.append(
    h(
      "header",
      { class: "session-head" },
      h("h1", {}, summary.agent_name || summary.agent_id || "Session", h("span", { class: "muted" }, ` · ${summary.room_id || ""}`)),
      h("div", { class: "badges" }, stateBadge(summary.state), summary.flag ? h("span", { class: "badge bad", title: "flagged by a policy" }, summary.flag) : null),
    ),
    h(
      "dl",
      { class: "facts" },
      fact("Session", h("code", {}, summary.id)),
      fact("Started", fmtTime(start)),
      fact("Duration", summary.state === "active" ? "live" : fmtDuration(summary.duration_seconds ?? durationOf(detail, start))),
      // Agent time billed with the user out of the RTC room; unknown (no room callback heard) is
      // left out rather than shown as a dash that could read as "none".
      typeof detail.no_user_seconds === "number" ? fact("No user", fmtDuration(detail.no_user_seconds)) : null,
      fact("End", summary.end_reason ? `${summary.end_reason}${summary.end_code !== null && summary.end_code !== undefined ? ` (${summary.end_code})` : ""}` : null),
      fact("User", summary.user_id),
      fact("App", summary.app_id),
      fact("Provider", summary.provider || "zego"),
      fact("Template", summary.template),
      fact("Turns", fmtNumber(summary.turns ?? turns.length)),
      fact("Interrupted", fmtNumber(interruptions)),
      fact("Exceptions", fmtNumber(exceptions)),
      fact("Instances", fmtNumber(instances)),
    ),
  );

  const side = h(
    "aside",
    { class: "side" },
    h("h2", {}, "Response time per round"),
    h("p", { class: "muted small" }, "From the end of the user's speech to the agent's first output."),
    h("div", { id: "round-latency" }, Array.isArray(detail.rounds) ? latencyChart(detail.rounds) : h("p", { class: "muted" }, "Not available from this server.")),
  );
  const latencies = (detail.instances || []).filter((i) => i.latency && Object.keys(i.latency).length);
  if (latencies.length) {
    side.append(
      h("h2", {}, "Vendor latency"),
      h(
        "table",
        { class: "data compact" },
        h("thead", {}, h("tr", {}, h("th", {}, "Instance"), h("th", { class: "num" }, "LLM TTFT"), h("th", { class: "num" }, "TTS first frame"), h("th", { class: "num" }, "Total"))),
        h(
          "tbody",
          {},
          latencies.map((i) =>
            h(
              "tr",
              {},
              h("td", {}, i.agent_instance_id),
              h("td", { class: "num" }, fmtMs(i.latency.LLMTTFT)),
              h("td", { class: "num" }, fmtMs(i.latency.TTSAudioFirstFrameTime)),
              h("td", { class: "num" }, fmtMs(i.latency.TotalCost)),
            ),
          ),
        ),
      ),
    );
  }
  if ((detail.actions || []).length) {
    side.append(
      h("h2", {}, "Policy actions"),
      h("ul", { class: "actions-list" }, detail.actions.map((a) => h("li", {}, `${a.kind || a.action || "action"}: ${a.state || ""}${a.reason ? ` (${a.reason})` : ""}`))),
    );
  }
  const analysis = analysisBlock(detail.analysis);
  if (analysis) side.append(analysis);
  root.append(
    h("div", { class: "session-body" }, h("div", { class: "conversation" }, h("h2", {}, "Conversation"), chat(turns, detail, start, transcript.rounds || [])), side),
    timelineTable(detail.timeline, start),
  );
  if (!["ended", "failed"].includes(summary.state)) live(main, root, id, detail.last_event_id ?? null, ctx);
}

// A live session fills in as it happens: each event from the session's stream redraws the
// page (once per burst) from the API, while this page is still the one shown.
function live(main, root, id, lastEventId, ctx) {
  const head = root.querySelector(".badges");
  if (head) head.append(h("span", { class: "badge live", title: "following the session's events" }, "live"));
  let timer = null;
  let stopped = false;
  const wanted = () => !stopped && ctx.current() && root.isConnected;
  const redraw = async () => {
    timer = null;
    if (!wanted()) return;
    stopped = true;
    try {
      const placeholder = h("div", {});
      main.append(placeholder);
      await renderSession(placeholder, id, ctx);
      if (!ctx.current()) return placeholder.remove();
      root.replaceWith(...placeholder.childNodes);
      placeholder.remove();
    } catch (error) {
      if (ctx.current()) ctx.showError(root, error);
    }
  };
  api.follow(`/v1/sessions/${encodeURIComponent(id)}/events`, lastEventId, () => {
    if (timer === null) timer = setTimeout(redraw, 250);
  }, wanted);
}

function durationOf(detail, start) {
  if (!detail.ended_at || !start) return null;
  return (new Date(detail.ended_at) - new Date(start)) / 1000;
}
