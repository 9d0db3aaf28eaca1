// DOM building and formatting. Every value reaches the page as a text node or an attribute set
// with setAttribute: nothing is parsed as HTML, so nothing needs escaping by hand.

export function h(tag, props = null, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// A link inside the dashboard: `parts` are encoded one by one.
export function link(text, ...parts) {
  return h("a", { href: "#/" + parts.map(encodeURIComponent).join("/") }, text);
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", null, title), ...children);
}

export function empty(text) {
  return h("p", { class: "empty" }, text);
}

export function failure(error) {
  return h("p", { class: "error" }, error && error.message ? error.message : String(error));
}

// columns: [{label, cell: row => Node | string, class?}]
export function table(columns, rows, emptyText = "Nothing here.") {
  if (!rows.length) return empty(emptyText);
  const head = h("tr", null, columns.map((c) => h("th", { class: c.class }, c.label)));
  const body = rows.map((row) =>
    h("tr", null, columns.map((c) => h("td", { class: c.class }, c.cell(row)))),
  );
  return h("table", { class: "grid" }, h("thead", null, head), h("tbody", null, body));
}

// A coloured state word: passing / warning / critical / neutral.
export function badge(text, tone = toneOf(text)) {
  return h("span", { class: `badge ${tone}` }, text);
}

const TONES = {
  passing: "ok", running: "ok", ready: "ok", successful: "ok", healthy: "ok", attached: "ok",
  eligible: "ok", warning: "warn", draining: "warn", ineligible: "warn", pending: "warn", assigned: "warn", starting: "warn",
  degraded: "warn", pending_alert: "warn", detached: "muted",
  critical: "bad", failed: "bad", lost: "bad", down: "bad", unhealthy: "bad", firing: "bad",
  rolled_back: "bad", exited: "bad",
};

// A node's scheduling state, apart from its liveness (`status`): eligible, ineligible or draining.
export function scheduling(node) {
  return node.drain_deadline ? "draining" : node.eligibility || "eligible";
}

export function toneOf(text) {
  return TONES[String(text).split(" ")[0]] || "muted";
}

export function ago(ts) {
  if (!ts) return "-";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

export function clock(ts) {
  return ts ? new Date(ts * 1000).toLocaleTimeString() : "-";
}

export function bytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i && Math.abs(n) < 10 ? 1 : 0)} ${units[i]}`;
}

export function mib(n) {
  return n ? bytes(n * 1024 * 1024) : "-";
}

export function cores(units) {
  return units ? `${(units / 1024).toFixed(units % 1024 ? 2 : 0)} cores` : "-";
}


export function kv(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]),
  );
}
