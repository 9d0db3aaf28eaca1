// Volumes with who holds them (lease, fencing epoch), and their snapshots.

import { watch } from "../api.js";
import { ago, badge, bytes, failure, h, link, mib, replace, section, table } from "../dom.js";

export function render(root, params, signal) {
  const volumes = h("div", null, "Loading…");
  const snapshots = h("div", null, "Loading…");
  replace(root, h("h1", null, "Volumes"), section("Volumes", volumes), section("Snapshots", snapshots));
  watch("/v1/volumes", signal, (list) => replace(volumes, volumeTable(list)), (error) =>
    replace(volumes, failure(error)),
  );
  watch("/v1/snapshots", signal, (list) => replace(snapshots, snapshotTable(list)), (error) =>
    replace(snapshots, failure(error)),
  );
}

function holders(volume) {
  return volume.attachments.map((a) =>
    h("div", null, h("code", null, a.task), " on ", link(a.node, "nodes", a.node),
      h("span", { class: "muted" }, ` · epoch ${a.epoch} · lease ${leaseLeft(a.lease_expires)}`)),
  );
}

function leaseLeft(expires) {
  const left = expires - Date.now() / 1000;
  return left >= 0 ? `${Math.round(left)}s left` : `expired ${ago(expires)}`;
}

function volumeTable(list) {
  return table(
    [
      { label: "volume", cell: (v) => h("strong", null, v.name) },
      { label: "state", cell: (v) => badge(v.state) },
      { label: "driver", cell: (v) => (v.node ? [v.driver, " on ", link(v.node, "nodes", v.node)] : v.driver) },
      { label: "scope", cell: (v) => v.scope },
      { label: "access", cell: (v) => v.access },
      { label: "size", class: "num", cell: (v) => (v.size ? mib(v.size) : "unbounded") },
      { label: "epoch", class: "num", cell: (v) => String(v.epoch) },
      { label: "held by", cell: holders },
      { label: "created", cell: (v) => ago(v.created_at) },
    ],
    list,
    "No volumes.",
  );
}

function snapshotTable(list) {
  return table(
    [
      { label: "snapshot", cell: (s) => h("code", null, s.id) },
      { label: "volume", cell: (s) => s.volume },
      { label: "consistency", cell: (s) => s.consistency },
      { label: "archive", class: "num", cell: (s) => bytes(s.size) },
      { label: "files", class: "num", cell: (s) => `${s.files} (${bytes(s.data_bytes)})` },
      { label: "node", cell: (s) => link(s.node, "nodes", s.node) },
      { label: "taken", cell: (s) => ago(s.created_at) },
    ],
    list,
    "No snapshots.",
  );
}
