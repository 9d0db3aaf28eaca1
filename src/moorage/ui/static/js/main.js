// The dashboard's entry point: hash routes → pages, the token prompt, the connection light.
//
//   #/                overview         #/volumes     volumes and snapshots
//   #/services/NAME   one service      #/kv/PREFIX   KV browser
//   #/nodes/NAME      one node         #/events      live events
//
// A page is `render(root, params, signal)`: it fills `root` and keeps it live (blocking queries,
// polls, streams) until `signal` aborts, which happens when the route changes.

import { bus, get, setToken, token } from "./api.js";
import { charts } from "./charts.js";
import { failure, replace } from "./dom.js";
import * as events from "./pages/events.js";
import * as kv from "./pages/kv.js";
import * as node from "./pages/node.js";
import * as overview from "./pages/overview.js";
import * as service from "./pages/service.js";
import * as volumes from "./pages/volumes.js";

// State the page exposes for debugging and for the browser test (tests/integration/test_ui.py).
window.moorage = { charts, route: null };

function route(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const [head, ...rest] = parts;
  if (head === "services" && rest[0]) return { nav: "overview", page: service, params: { name: rest[0] } };
  if (head === "nodes" && rest[0]) return { nav: "overview", page: node, params: { name: rest[0] } };
  if (head === "volumes") return { nav: "volumes", page: volumes, params: {} };
  if (head === "kv") return { nav: "kv", page: kv, params: { key: rest.join("/") } };
  if (head === "events") return { nav: "events", page: events, params: {} };
  return { nav: "overview", page: overview, params: {} };
}

let current = null;
let dismissed = false; // the user cancelled the token prompt: no more until the next route

function show() {
  current?.abort();
  current = new AbortController();
  dismissed = false;
  const { nav, page, params } = route(location.hash);
  window.moorage.route = { nav, params };
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === nav);
  }
  const root = document.getElementById("page");
  try {
    page.render(root, params, current.signal);
  } catch (error) {
    replace(root, failure(error));
  }
}

function tokenPrompt(reason = "") {
  const dialog = document.getElementById("token-dialog");
  if (dialog.open) return;
  document.getElementById("token-reason").textContent = reason;
  document.getElementById("token-input").value = token();
  dialog.showModal();
}

function setup() {
  const dialog = document.getElementById("token-dialog");
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "save") setToken(document.getElementById("token-input").value.trim());
    else if (dialog.returnValue === "clear") setToken("");
    else {
      dismissed = true;
      return;
    }
    show();
  });
  document.getElementById("token-button").addEventListener("click", () => tokenPrompt());
  bus.addEventListener("denied", (e) => {
    if (!dismissed) tokenPrompt(`The server refused a request: ${e.detail}`);
  });
  const light = document.getElementById("conn");
  bus.addEventListener("connection", (e) => {
    light.className = `conn ${e.detail ? "up" : "down"}`;
    light.textContent = e.detail ? light.dataset.version || "connected" : "server unreachable";
  });
  get("/v1/status").then(({ data }) => {
    light.dataset.version = `${data.leader} · v${data.version}`;
    light.textContent = light.dataset.version;
  }).catch(() => {});
  window.addEventListener("hashchange", show);
  show();
}

setup();
