// The console's shell: sign-in, the signed-in identity, and hash routing between the pages.

import { ApiError, api, forgetSecret, keepSecret, secret, whenUnauthorized } from "./api.js";
import { clear, h } from "./dom.js";
import { mountAdmin } from "./admin.js";
import { mountJobs } from "./jobs.js";
import { mountSpend } from "./spend.js";

const PAGES = {
  jobs: { title: "Fine-tuning", mount: mountJobs },
  spend: { title: "Spend", mount: mountSpend },
  admin: { title: "Admin", mount: mountAdmin, adminOnly: true },
};

const $ = (id) => document.getElementById(id);
let caller = null;
let current = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const cut = raw.indexOf("?");
  return {
    name: cut < 0 ? raw : raw.slice(0, cut),
    params: new URLSearchParams(cut < 0 ? "" : raw.slice(cut + 1)),
  };
}

function navigate(name, params) {
  const query = params ? params.toString() : "";
  location.hash = `#/${name}${query ? `?${query}` : ""}`;
}

function unmount() {
  if (current) current.unmount();
  current = null;
  clear($("page"));
}

function route(moveFocus) {
  if (!caller) return;
  const { name, params } = parseHash();
  const page = PAGES[name];
  if (!page || (page.adminOnly && caller.role !== "admin")) {
    history.replaceState(null, "", `#/${caller.role === "admin" ? "admin" : "jobs"}`);
    route(false);
    return;
  }
  unmount();
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${page.title} · Farebox console`;
  current = page.mount($("page"), { caller, navigate }, params);
  if (moveFocus) {
    const heading = $("page").querySelector("h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }
}

function showSignIn(message) {
  caller = null;
  unmount();
  $("nav").hidden = true;
  $("who").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  document.title = "Sign in · Farebox console";
  $("secret").focus();
}

function showConsole(who) {
  caller = who;
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  for (const link of document.querySelectorAll("[data-admin-only]")) link.hidden = who.role !== "admin";
  const label = clear($("who-label"));
  if (who.role === "admin") label.append("Signed in as ", h("strong", { text: "admin" }), " · every team");
  else label.append("Team ", h("strong", { text: who.team_name }));
  route(false);
}

function signOut(message) {
  forgetSecret();
  if (location.hash) history.replaceState(null, "", location.pathname);
  showSignIn(message);
}

async function onSignIn(event) {
  event.preventDefault();
  const input = $("secret");
  const value = input.value.trim();
  input.value = "";
  if (!value) {
    $("signin-error").textContent = "Paste a team key or the admin token.";
    return;
  }
  const button = event.target.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const who = await api("/console/api/whoami", { token: value });
    keepSecret(value);
    showConsole(who);
  } catch (err) {
    const refused = err instanceof ApiError && err.status === 401;
    $("signin-error").textContent = refused ? "Farebox does not know this key or token." : err.message;
    input.focus();
  } finally {
    button.disabled = false;
  }
}

async function start() {
  $("signin-form").addEventListener("submit", onSignIn);
  $("sign-out").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", () => route(true));
  whenUnauthorized(() => signOut("Farebox refused the key (revoked or expired?): sign in again."));
  const kept = secret();
  if (!kept) {
    showSignIn();
    return;
  }
  try {
    showConsole(await api("/console/api/whoami"));
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) showSignIn(err.message);
  }
}

start();
