// The dashboard's only way to the server: `/v1` calls carrying the user's ACL token, blocking
// queries (`?index=N&wait=30s`) for live pages, and the server-sent event stream.

const TOKEN_KEY = "moorage.token";

export function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || "";
  }
}

function headers() {
  const out = { Accept: "application/json" };
  if (token()) out["X-Moorage-Token"] = token();
  return out;
}

// Listeners: "denied" (a 401/403: ask for a token), "connection" (up / down).
export const bus = new EventTarget();

function connected(up) {
  bus.dispatchEvent(new CustomEvent("connection", { detail: up }));
}

// GET a path; resolves to {data, index}. 401/403 also tell the bus (the token prompt).
// `missingOk`: a 404 answers {data: null, index} (a KV prefix with nothing under it yet).
export async function get(path, { signal, missingOk = false } = {}) {
  let response;
  try {
    response = await fetch(path, { headers: headers(), signal, cache: "no-store" });
  } catch (error) {
    if (!signal || !signal.aborted) connected(false);
    throw error;
  }
  connected(true);
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { message: text.slice(0, 200) };
  }
  const index = response.headers.get("X-Moorage-Index") || response.headers.get("X-Consul-Index");
  if (response.status === 404 && missingOk) return { data: null, index: Number(index || 0) };
  if (!response.ok) {
    const error = new ApiError(response.status, body);
    if (response.status === 401 || response.status === 403) {
      bus.dispatchEvent(new CustomEvent("denied", { detail: error.message }));
    }
    throw error;
  }
  return { data: body, index: Number(index || 0) };
}

// GET a path that may not exist on this server (an older one): null on 404.
export async function optional(path, options) {
  try {
    return (await get(path, options)).data;
  } catch (error) {
    if (error.status === 404 || error.status === 405) return null;
    throw error;
  }
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

// Follow a blocking endpoint until `signal` aborts: onData(data) after each change (and after
// each wait that ended without one), onError(error) on a failure, then retry after a pause.
export async function watch(path, signal, onData, onError = () => {}, { missingOk = false } = {}) {
  let index = 0;
  const sep = path.includes("?") ? "&" : "?";
  while (!signal.aborted) {
    try {
      const url = index ? `${path}${sep}index=${index}&wait=30s` : path;
      const answer = await get(url, { signal, missingOk });
      if (signal.aborted) return;
      index = answer.index < index ? 0 : answer.index; // backwards: the server restarted
      onData(answer.data);
      if (!answer.index) await sleep(5000, signal); // not a blocking endpoint: poll
    } catch (error) {
      if (signal.aborted) return;
      onError(error);
      index = 0;
      await sleep(error.status === 403 || error.status === 401 ? 15000 : 3000, signal);
    }
  }
}

// Like watch, but a plain GET every `ms`: for what may wait a little, because a browser keeps
// at most six connections to a server and every blocking query holds one.
export async function poll(path, ms, signal, onData, onError = () => {}, { missingOk = false } = {}) {
  await every(ms, signal, async () => {
    try {
      const answer = await get(path, { signal, missingOk });
      if (!signal.aborted) onData(answer.data);
    } catch (error) {
      if (!signal.aborted) onError(error);
    }
  });
}

// Call fn now and every `ms` until `signal` aborts.
export async function every(ms, signal, fn) {
  while (!signal.aborted) {
    await fn();
    await sleep(ms, signal);
  }
}

// Server-sent events over fetch (EventSource cannot send the token header): onEvent(type, data)
// for each event, starting after the revision `after` (null: from now); reconnects after the
// last revision seen until `signal` aborts.
export async function stream(path, signal, onEvent, onError = () => {}, after = null) {
  while (!signal.aborted) {
    try {
      const sep = path.includes("?") ? "&" : "?";
      const url = after === null ? path : `${path}${sep}after=${after}`;
      const response = await fetch(url, { headers: headers(), signal, cache: "no-store" });
      if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
      connected(true);
      await readEvents(response.body, (id, type, data) => {
        if (id) after = id;
        onEvent(type, data);
      });
    } catch (error) {
      if (signal.aborted) return;
      if (error.status === 401 || error.status === 403) {
        bus.dispatchEvent(new CustomEvent("denied", { detail: error.message }));
      } else if (!error.status) {
        connected(false);
      }
      onError(error);
    }
    await sleep(3000, signal);
  }
}

async function readEvents(body, emit) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const fields = { id: "", event: "message", data: [] };
      for (const line of block.split("\n")) {
        const colon = line.indexOf(":");
        if (colon <= 0) continue; // a comment (keepalive) or garbage
        const name = line.slice(0, colon);
        const field = line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") fields.data.push(field);
        else if (name === "id" || name === "event") fields[name] = field;
      }
      if (fields.data.length) emit(fields.id, fields.event, JSON.parse(fields.data.join("\n")));
    }
  }
}
