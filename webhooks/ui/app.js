// roomwarden's analyst page: a hash router over four views, and the read token prompt.
//   #/sessions?<filters>&sort=&order=&limit=&cursor=   the sessions table
//   #/session/<id>                                      one conversation
//   #/overview?<filters>                                stats as charts
//   #/search?q=&<filters>                               full-text search over turns

import * as api from "./api.js";
import { h, clear } from "./dom.js";
import { renderSessions } from "./sessions.js";
import { renderSession } from "./session.js";
import { renderOverview } from "./overview.js";
import { renderSearch } from "./search.js";

const main = document.getElementById("main");
const dialog = document.getElementById("token-dialog");
const tokenForm = document.getElementById("token-form");
const tokenInput = document.getElementById("token-input");
const tokenError = document.getElementById("token-error");
const forget = document.getElementById("forget-token");

let generation = 0; // a newer navigation makes older, slower answers drop their results

export function parseHash(hash = window.location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { view: parts[0] || "sessions", arg: parts[1] || null, params: new URLSearchParams(query) };
}

export function navigate(view, params = new URLSearchParams(), arg = null) {
  const query = params.toString();
  const path = arg ? `#/${view}/${encodeURIComponent(arg)}` : `#/${view}`;
  window.location.hash = query ? `${path}?${query}` : path;
}

function askToken(message = "") {
  tokenError.hidden = !message;
  tokenError.textContent = message;
  tokenInput.value = "";
  if (!dialog.open) dialog.showModal();
  tokenInput.focus();
}

tokenForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const candidate = tokenInput.value.trim();
  if (!candidate) return;
  let ok = false;
  try {
    ok = await api.check(candidate);
  } catch {
    tokenError.hidden = false;
    tokenError.textContent = "Could not reach the server.";
    return;
  }
  if (!ok) {
    tokenError.hidden = false;
    tokenError.textContent = "The server did not accept this token.";
    return;
  }
  api.setToken(candidate);
  dialog.close();
  route();
});

dialog.addEventListener("cancel", (event) => {
  if (!api.token()) event.preventDefault(); // nothing to show without a token
});

forget.addEventListener("click", () => {
  api.forgetToken();
  clear(main);
  askToken();
  forget.hidden = true;
});

export function showError(target, error) {
  if (error instanceof api.ApiError && error.status === 401) {
    api.forgetToken();
    askToken("The token was refused; enter a read token.");
    return;
  }
  let message = error.message || String(error);
  if (error instanceof api.ApiError && error.status === 501) message = "This server does not offer that yet (501).";
  if (error instanceof api.ApiError && error.status === 404) message = "Not found.";
  target.append(h("div", { class: "notice error", role: "alert" }, message));
}

function highlightNav(view) {
  const active = view === "session" ? "sessions" : view;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === active);
  }
}

export async function route() {
  const mine = ++generation;
  const { view, arg, params } = parseHash();
  highlightNav(view);
  if (!api.token()) {
    forget.hidden = true;
    askToken();
    return;
  }
  forget.hidden = false;
  const ctx = {
    navigate,
    showError,
    current: () => mine === generation,
  };
  const views = {
    sessions: () => renderSessions(main, params, ctx),
    session: () => renderSession(main, arg, ctx),
    overview: () => renderOverview(main, params, ctx),
    search: () => renderSearch(main, params, ctx),
  };
  clear(main);
  main.setAttribute("aria-busy", "true");
  main.dataset.view = view;
  try {
    await (views[view] || views.sessions)();
  } catch (error) {
    if (mine === generation) showError(main, error);
  } finally {
    if (mine === generation) main.removeAttribute("aria-busy");
  }
}

window.addEventListener("hashchange", route);
route();
