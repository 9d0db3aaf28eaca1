// One service: its state, CPU and memory charts, tasks with their checks, deployments, alerts
// and recent events.

import { poll, watch } from "../api.js";
import { formats, metricChart } from "../charts.js";
import {
  ago, badge, clock, empty, failure, h, kv, link, mib, replace, section, table,
} from "../dom.js";
import { alertTable, deploymentBadge, normalizeAlerts, serviceHealth, taskHealth } from "../health.js";

export function render(root, { name }, signal) {
  const head = h("div", null, "Loading…");
  const tasks = h("div", null, "Loading…");
  const checks = h("div");
  const deployments = h("div", null, "Loading…");
  const alerts = h("div");
  const events = h("div");
  const path = encodeURIComponent(name);
  const legend = (s) => [s.labels.task, s.labels.container].filter(Boolean).join(" · ") || s.metric;
  const labels = { service: name };
  replace(
    root,
    h("h1", null, h("a", { href: "#/" }, "Overview"), " / ", name),
    head,
    h(
      "div",
      { class: "charts" },
      metricChart({ name: "cpu", title: "CPU (% of a core), last hour", metric: "task_cpu_percent", labels, format: formats.percent, legend }, signal),
      metricChart({ name: "memory", title: "Memory (RSS), last hour", metric: "task_memory_rss_bytes", labels, format: formats.bytes, legend }, signal),
    ),
    section("Tasks", tasks),
    section("Checks", checks),
    section("Deployments", deployments),
    section("Alerts", alerts),
    section("Recent events", events),
  );

  watch(`/v1/services/${path}`, signal, (detail) => replace(head, header(detail)), (error) =>
    replace(head, failure(error)),
  );
  watch(`/v1/tasks?service=${path}`, signal, (list) => {
    const open = Boolean(tasks.querySelector("details")?.open); // keep it open across updates
    replace(tasks, taskTables(list, open));
    replace(checks, checkTable(list.filter((t) => t.desired === "run")));
  }, (error) => replace(tasks, failure(error)));
  watch(`/v1/deployments?service=${path}`, signal, (list) =>
    replace(deployments, deploymentList(list.slice(0, 5))),
  (error) => replace(deployments, failure(error)));
  poll(`/v1/events?service=${path}`, 10000, signal, (list) =>
    replace(events, eventTable(list.slice(-15).reverse())),
  (error) => replace(events, failure(error)));
  poll("/v1/alerts", 10000, signal, (answer) => {
    const mine = normalizeAlerts(answer).filter((a) => a.labels.service === name);
    replace(alerts, answer === null ? empty("Alerts are not available on this server.") : alertTable(mine, "No alert on this service."));
  }, (error) => replace(alerts, failure(error)), { missingOk: true });
}

function header({ service, summary, taskdef }) {
  const containers = (taskdef && taskdef.containers) || [];
  return h(
    "div",
    { class: "card" },
    h("div", { class: "row" }, serviceHealth(summary), " ", deploymentBadge(summary.deployment), " ",
      h("span", { class: "muted" }, summary.message)),
    kv([
      ["task definition", `${service.family}:${service.revision}`],
      ["count", `${summary.running} running of ${summary.desired} (${summary.pending} pending)`],
      ["restarts", String(summary.restarts)],
      ["placement", service.placement.strategy],
      ["deployment", `${service.deployment.strategy}, min healthy ${service.deployment.min_healthy_percent}%`],
      ["stable revision", service.stable_revision ?? "-"],
    ]),
    table(
      [
        { label: "container", cell: (c) => c.name },
        { label: "image / command", cell: (c) => h("code", null, c.image || (c.command || []).join(" ")) },
        { label: "cpu", class: "num", cell: (c) => String(c.cpu) },
        { label: "memory", class: "num", cell: (c) => mib(c.memory) },
        { label: "ports", cell: (c) => c.ports.map((p) => p.name).join(", ") },
        { label: "check", cell: (c) => checkSpec(c.health) },
      ],
      containers,
    ),
  );
}

function checkSpec(health) {
  if (!health) return "-";
  const kind = health.http ? `http ${health.http}` : health.tcp ? "tcp" : health.command ? "command" : "ttl";
  const every = typeof health.interval === "number" ? `${health.interval}s` : health.interval;
  return `${kind} every ${every}`;
}

function taskTables(list, open) {
  const live = list.filter((t) => t.desired === "run");
  const done = list.filter((t) => t.desired !== "run").slice(-20).reverse();
  const columns = [
    { label: "task", cell: (t) => h("code", null, t.id) },
    { label: "node", cell: (t) => (t.node ? link(t.node, "nodes", t.node) : "-") },
    { label: "status", cell: (t) => badge(t.status) },
    { label: "health", cell: taskHealth },
    { label: "rev", class: "num", cell: (t) => String(t.revision) },
    { label: "ports", cell: (t) => Object.entries(t.ports).map(([k, v]) => `${k}:${v}`).join(" ") },
    { label: "restarts", class: "num", cell: (t) => String(t.restarts) },
    { label: "started", cell: (t) => ago(t.started_at) },
    { label: "", cell: (t) => h("span", { class: "muted" }, t.message) },
  ];
  return [
    table(columns, live, "No task wanted."),
    done.length
      ? h("details", { open }, h("summary", null, `${done.length} stopped recently`), table(columns, done))
      : null,
  ];
}

function checkTable(tasks) {
  const rows = tasks.flatMap((t) => t.checks.map((c) => ({ task: t.id, ...c })));
  return table(
    [
      { label: "task", cell: (c) => h("code", null, c.task) },
      { label: "container", cell: (c) => c.container },
      { label: "kind", cell: (c) => c.kind },
      { label: "status", cell: (c) => badge(c.status) },
      { label: "output", cell: (c) => h("span", { class: "output" }, c.output.slice(0, 300)) },
      { label: "updated", cell: (c) => ago(c.updated_at) },
    ],
    rows,
    "No health checks on this service's tasks.",
  );
}

function deploymentList(list) {
  if (!list.length) return empty("No deployment yet.");
  return list.map((d) => {
    const from = d.from_revision === null ? "first deploy" : `revision ${d.from_revision}`;
    return h(
      "div",
      { class: "deployment" },
      h("div", { class: "row" }, deploymentBadge(d.status), " ", h("strong", null, `${from} → ${d.to_revision}`),
        h("span", { class: "muted" }, ` ${d.strategy} · ${d.id} · ${ago(d.created_at)}`)),
      progress(d),
      h("div", { class: "muted" },
        `${d.healthy}/${d.count} healthy · ${d.placed} placed · ${d.old_remaining} old remaining`,
        d.failures.length ? ` · ${d.failures.length} failures` : "",
        d.message ? ` · ${d.message}` : ""),
    );
  });
}

function progress(d) {
  const bar = h("div", { class: `bar ${d.status}` });
  bar.style.width = `${d.count ? Math.min(100, (100 * d.healthy) / d.count) : 100}%`;
  return h("div", { class: "progress", title: `${d.healthy} of ${d.count} new tasks healthy` }, bar);
}

function eventTable(list) {
  return table(
    [
      { label: "time", cell: (e) => clock(e.time) },
      { label: "type", cell: (e) => h("code", null, e.type) },
      { label: "message", cell: (e) => e.message },
    ],
    list,
    "No events for this service.",
  );
}
