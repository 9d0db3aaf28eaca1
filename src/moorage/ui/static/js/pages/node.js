// One node: its state and resources, CPU and memory charts, the tasks placed on it.

import { watch } from "../api.js";
import { formats, metricChart } from "../charts.js";
import { ago, badge, cores, empty, failure, h, kv, link, mib, replace, scheduling, section, table } from "../dom.js";
import { taskHealth } from "../health.js";

export function render(root, { name }, signal) {
  const head = h("div", null, "Loading…");
  const tasks = h("div", null, "Loading…");
  const labels = { node: name };
  const legend = (s) => s.labels.path || s.labels.node || s.metric;
  replace(
    root,
    h("h1", null, h("a", { href: "#/" }, "Overview"), " / node ", name),
    head,
    h(
      "div",
      { class: "charts" },
      metricChart({ name: "node-cpu", title: "CPU (% of the machine), last hour", metric: "node_cpu_percent", labels, format: formats.percent, legend }, signal),
      metricChart({ name: "node-memory", title: "Memory used, last hour", metric: "node_memory_used_bytes", labels, format: formats.bytes, legend }, signal),
    ),
    section("Tasks on this node", tasks),
  );
  watch("/v1/nodes", signal, (nodes) => {
    const node = nodes.find((n) => n.name === name);
    replace(head, node ? facts(node) : empty(`No node named ${name}.`));
  }, (error) => replace(head, failure(error)));
  watch(`/v1/tasks?node=${encodeURIComponent(name)}`, signal, (list) =>
    replace(tasks, taskTable(list.filter((t) => t.desired === "run"))),
  (error) => replace(tasks, failure(error)));
}

function facts(node) {
  const attrs = Object.entries(node.attrs).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`));
  return h(
    "div",
    { class: "card" },
    kv([
      ["status", badge(node.status)],
      ["scheduling", badge(scheduling(node))],
      ["address", node.address],
      ["agent", node.agent_addr || "-"],
      ["cpu", `${node.cpu} units (${cores(node.cpu)})`],
      ["memory", mib(node.memory)],
      ["drivers", node.drivers.join(", ")],
      ["cgroups", node.cgroups],
      ["ports", `${node.port_range[0]}-${node.port_range[1]}`],
      ["registered", ago(node.registered_at)],
      ["attributes", attrs.length ? attrs : "-"],
      node.drain_deadline ? ["drain deadline", new Date(node.drain_deadline * 1000).toLocaleString()] : null,
    ].filter(Boolean)),
  );
}

function taskTable(list) {
  return table(
    [
      { label: "task", cell: (t) => h("code", null, t.id) },
      { label: "service", cell: (t) => link(t.service, "services", t.service) },
      { label: "status", cell: (t) => badge(t.status) },
      { label: "health", cell: taskHealth },
      { label: "cpu", class: "num", cell: (t) => String(t.cpu) },
      { label: "memory", class: "num", cell: (t) => mib(t.memory) },
      { label: "started", cell: (t) => ago(t.started_at) },
    ],
    list,
    "No task runs here.",
  );
}
