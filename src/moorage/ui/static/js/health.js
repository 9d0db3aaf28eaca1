// Health at a glance: a service's state from its summary, firing alerts from `/v1/alerts`.

import { ago, badge, h, table } from "./dom.js";

// ServiceSummary → a badge: healthy (every desired task healthy), degraded, unhealthy, stopped.
export function serviceHealth(s) {
  if (s.status === "stopped" || !s.desired) return badge("stopped", "muted");
  const counts = `${s.healthy}/${s.desired}`;
  if (s.healthy >= s.desired) return badge(`healthy ${counts}`, "ok");
  if (s.healthy > 0) return badge(`degraded ${counts}`, "warn");
  return badge(`unhealthy ${counts}`, "bad");
}

// A deployment state ("running 2/3", "successful", "rolled_back", "stable"...).
export function deploymentBadge(text) {
  const word = String(text).split(" ")[0];
  const tone = { running: "info", replacing: "info", successful: "ok", failed: "bad", rolled_back: "bad" };
  return badge(text, tone[word] || "muted");
}

// The health of one task: its aggregate check state, or its status when it has no checks.
export function taskHealth(t) {
  if (t.health) return badge(t.health);
  return t.status === "running" ? badge("no checks", "muted") : badge(t.status);
}

// `/v1/alerts` answers `{alerts: [instance], notifications, evaluated_at}`; keep the fields the
// pages show (a plain list of instances is read the same way).
export function normalizeAlerts(answer) {
  const list = Array.isArray(answer) ? answer : (answer && (answer.alerts || answer.instances)) || [];
  return list.map((a) => {
    const labels = a.labels || {};
    const annotations = a.annotations || {};
    return {
      name: a.rule || a.name || a.alertname || labels.alertname || "alert",
      state: a.state || a.status || "",
      severity: a.severity || labels.severity || "",
      labels,
      value: a.value,
      since: a.fired_at || a.active_at || a.since || a.startsAt || 0,
      silenced: Boolean(a.silenced),
      summary: a.summary || annotations.summary || a.message || annotations.description || "",
    };
  });
}

export function firing(alerts) {
  return alerts.filter((a) => a.state === "firing");
}

export function alertTable(alerts, emptyText) {
  const labelText = (a) =>
    Object.entries(a.labels)
      .filter(([k]) => k !== "alertname")
      .map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`));
  return table(
    [
      { label: "alert", cell: (a) => h("strong", null, a.name) },
      { label: "state", cell: (a) => [badge(a.state), a.silenced ? [" ", badge("silenced", "muted")] : null] },
      { label: "labels", cell: labelText },
      { label: "value", cell: (a) => (typeof a.value === "number" ? a.value.toFixed(2) : "") },
      { label: "since", cell: (a) => (typeof a.since === "number" ? ago(a.since) : a.since) },
      { label: "summary", cell: (a) => a.summary },
    ],
    alerts,
    emptyText,
  );
}
