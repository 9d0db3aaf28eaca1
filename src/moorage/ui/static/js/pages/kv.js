// The KV browser: one level of a prefix at a time (`?keys&separator=/`), and a key's value.
// Routes: #/kv/ (the root), #/kv/app/config/ (a prefix), #/kv/app/config/port (a key).

import { watch } from "../api.js";
import { empty, failure, h, kv, replace, section, table } from "../dom.js";

const encode = (key) => key.split("/").map(encodeURIComponent).join("/");
const href = (key) => `#/kv/${encode(key)}`;

export function render(root, { key }, signal) {
  const body = h("div", null, "Loading…");
  const folder = key === "" || key.endsWith("/");
  replace(root, h("h1", null, "KV ", crumbs(key)), section(folder ? "Keys" : "Value", body));
  if (folder) {
    watch(`/v1/kv/${encode(key)}?keys&separator=/`, signal, (keys) => replace(body, listing(key, keys || [])),
      (error) => replace(body, failure(error)), { missingOk: true });
  } else {
    watch(`/v1/kv/${encode(key)}`, signal, (entries) => replace(body, entries ? value(entries[0]) : empty("No such key.")),
      (error) => replace(body, failure(error)), { missingOk: true });
  }
}

function crumbs(key) {
  const parts = key.split("/");
  const out = [h("a", { href: "#/kv/" }, "/")];
  let prefix = "";
  parts.forEach((part, i) => {
    if (!part) return;
    const last = i === parts.length - 1;
    prefix += part + (last ? "" : "/");
    out.push(" ", last ? h("span", null, part) : h("a", { href: href(prefix) }, `${part}/`));
  });
  return h("span", { class: "crumbs" }, out);
}

function listing(prefix, keys) {
  return table(
    [
      {
        label: "key",
        cell: (k) => h("a", { href: href(k), class: k.endsWith("/") ? "folder" : "" }, k.slice(prefix.length) || k),
      },
      { label: "", cell: (k) => (k.endsWith("/") ? h("span", { class: "muted" }, "prefix") : "") },
    ],
    keys.filter((k) => k !== prefix),
    prefix ? `Nothing under ${prefix}` : "The KV store is empty (`moorage kv put KEY VALUE`).",
  );
}

function value(entry) {
  const raw = entry.Value === null ? new Uint8Array() : Uint8Array.from(atob(entry.Value), (c) => c.charCodeAt(0));
  let shown;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
    shown = h("pre", { class: "value" }, pretty(text));
  } catch {
    shown = h("pre", { class: "value" }, `binary, ${raw.length} bytes:\n${hex(raw.slice(0, 512))}`);
  }
  return [
    kv([
      ["key", h("code", null, entry.Key)],
      ["size", `${raw.length} bytes`],
      ["flags", String(entry.Flags)],
      ["create index", String(entry.CreateIndex)],
      ["modify index", String(entry.ModifyIndex)],
    ]),
    shown,
  ];
}

function pretty(text) {
  try {
    const parsed = JSON.parse(text);
    if (typeof parsed === "object" && parsed !== null) return JSON.stringify(parsed, null, 2);
  } catch {
    // not JSON: shown as it is
  }
  return text;
}

function hex(bytes) {
  const lines = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const row = Array.from(bytes.slice(i, i + 16), (b) => b.toString(16).padStart(2, "0"));
    lines.push(`${i.toString(16).padStart(6, "0")}  ${row.join(" ")}`);
  }
  return lines.join("\n");
}
