// Overview: the nodes, the services with their health, and the alerts that fire.

import { watch } from "../api.js";
import { ago, badge, cores, empty, failure, h, link, mib, replace, scheduling, section, table } from "../dom.js";
import { alertTable, deploymentBadge, firing, normalizeAlerts, serviceHealth } from "../health.js";

export function render(root, params, signal) {
  const totals = h("div", { class: "totals" });
  const services = h("div", null, "Loading…");
  const nodes = h("div", null, "Loading…");
  const alerts = h("div", null, "Loading…");
  const seen = { services: null, nodes: null, alerts: null };
  const update = () => replace(totals, tiles(seen));
  replace(
    root,
    h("h1", null, "Overview"),
    totals,
    section("Firing alerts", alerts),
    section("Services", services),
    section("Nodes", nodes),
  );

  watch("/v1/services", signal, (data) => {
    seen.services = data;
    replace(services, serviceTable(data));
    update();
  }, (error) => replace(services, failure(error)));
  watch("/v1/nodes", signal, (data) => {
    seen.nodes = data;
    replace(nodes, nodeTable(data));
    update();
  }, (error) => replace(nodes, failure(error)));
  watch("/v1/alerts", signal, (answer) => {
    seen.alerts = answer === null ? null : firing(normalizeAlerts(answer));
    replace(
      alerts,
      seen.alerts === null
        ? empty("Alerts are not available on this server.")
        : alertTable(seen.alerts, "No alert is firing."),
    );
    update();
  }, (error) => replace(alerts, failure(error)), { missingOk: true });
}

function tiles({ services, nodes, alerts }) {
  const tile = (label, value, tone) =>
    h("div", { class: `tile ${tone}` }, h("span", { class: "value" }, value), h("span", null, label));
  const out = [];
  if (nodes) {
    const ready = nodes.filter((n) => n.status === "ready").length;
    const tone = !nodes.length ? "muted" : ready === nodes.length ? "ok" : "warn";
    out.push(tile("nodes ready", `${ready}/${nodes.length}`, tone));
  }
  if (services) {
    const active = services.filter((s) => s.status !== "stopped" && s.desired);
    const healthy = active.filter((s) => s.healthy >= s.desired).length;
    out.push(tile("services healthy", `${healthy}/${active.length}`, healthy === active.length ? "ok" : "bad"));
    const running = services.reduce((n, s) => n + s.running, 0);
    const desired = services.reduce((n, s) => n + s.desired, 0);
    out.push(tile("tasks running", `${running}/${desired}`, running >= desired ? "ok" : "warn"));
  }
  if (alerts) out.push(tile("alerts firing", String(alerts.length), alerts.length ? "bad" : "ok"));
  return out;
}

function serviceTable(services) {
  return table(
    [
      { label: "service", cell: (s) => link(s.name, "services", s.name) },
      { label: "health", cell: serviceHealth },
      { label: "running", class: "num", cell: (s) => `${s.running}/${s.desired}` },
      { label: "pending", class: "num", cell: (s) => String(s.pending) },
      { label: "restarts", class: "num", cell: (s) => String(s.restarts) },
      { label: "revision", class: "num", cell: (s) => String(s.revision) },
      { label: "deployment", cell: (s) => deploymentBadge(s.deployment) },
      { label: "", cell: (s) => h("span", { class: "muted" }, s.message) },
    ],
    services,
    "No services yet: deploy one with `moorage deploy`.",
  );
}

function nodeTable(nodes) {
  return table(
    [
      { label: "node", cell: (n) => link(n.name, "nodes", n.name) },
      { label: "status", cell: (n) => badge(n.status) },
      { label: "scheduling", cell: (n) => badge(scheduling(n)) },
      { label: "address", cell: (n) => n.address },
      { label: "cpu", class: "num", cell: (n) => cores(n.cpu) },
      { label: "memory", class: "num", cell: (n) => mib(n.memory) },
      { label: "drivers", cell: (n) => n.drivers.join(", ") },
      { label: "registered", cell: (n) => ago(n.registered_at) },
    ],
    nodes,
    "No node has joined yet.",
  );
}
