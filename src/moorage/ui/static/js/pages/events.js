// Live events: the recent ones, then the server-sent stream (`/v1/events/stream`), newest on top.

import { get, stream } from "../api.js";
import { badge, clock, failure, h, link, replace, section } from "../dom.js";

const KEEP = 500; // rows on the page

export function render(root, params, signal) {
  const rows = h("tbody");
  const status = h("span", { class: "muted" }, "connecting…");
  const filter = h("input", { type: "search", placeholder: "filter: type, service, node, text", size: 36 });
  const list = h(
    "table",
    { class: "grid events" },
    h("thead", null, h("tr", null, ["time", "type", "service", "node", "message"].map((c) => h("th", null, c)))),
    rows,
  );
  const apply = () => {
    const needle = filter.value.trim().toLowerCase();
    for (const row of rows.children) row.hidden = needle !== "" && !row.dataset.text.includes(needle);
  };
  filter.addEventListener("input", apply);
  replace(root, h("h1", null, "Events"), section("Live", h("div", { class: "row" }, filter, " ", status), list));

  const add = (event, top) => {
    const row = h(
      "tr",
      { dataset: { text: [event.type, event.service, event.node, event.task, event.message].join(" ").toLowerCase() } },
      h("td", null, clock(event.time)),
      h("td", null, badge(event.type, tone(event.type))),
      h("td", null, event.service ? link(event.service, "services", event.service) : ""),
      h("td", null, event.node ? link(event.node, "nodes", event.node) : ""),
      h("td", null, event.message),
    );
    if (top) rows.prepend(row);
    else rows.append(row);
    while (rows.children.length > KEEP) rows.lastChild.remove();
    apply();
  };

  get("/v1/events", { signal })
    .then(({ data }) => {
      const recent = data.slice(-KEEP);
      for (const event of recent.slice().reverse()) add(event, false);
      const after = recent.length ? recent[recent.length - 1].revision : null;
      replace(status, "live");
      return stream("/v1/events/stream", signal, (type, event) => add(event, true), (error) =>
        replace(status, failure(error)), after);
    })
    .catch((error) => {
      if (!signal.aborted) replace(status, failure(error));
    });
}

function tone(type) {
  if (/fail|lost|down|rolled_back|unplaced|critical|killed/.test(type)) return "bad";
  if (/drain|restart|retry|warning|stopp/.test(type)) return "warn";
  if (/start|healthy|up|success|register|deployed/.test(type)) return "ok";
  return "muted";
}
