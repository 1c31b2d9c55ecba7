// The Alknet browser console (docs/spec/handlers.md §HTTP, Console). It
// uses the node's HTTP gateway like any client: node/info through
// POST /call, the operation list from GET /search, specs from
// GET /schema, calls through POST /call, subscriptions through
// POST /subscribe (Server-Sent Events read from a streaming fetch) or the
// alknet/call WebSocket. Text from the node is only ever set as text.

import { connect, defaultURL } from "./alknet.js";

const TOKEN_KEY = "alknet.console.token";
const $ = (id) => document.getElementById(id);

// ---- token ---------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function showTokenState() {
  $("token-state").textContent = token() ? "token set for this tab" : "no token: calls are anonymous";
}

// ---- requests ------------------------------------------------------------

class HTTPCallError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || "INTERNAL";
    this.body = body;
  }
}

function headers(withBody) {
  const h = { Accept: "application/json" };
  if (withBody) {
    h["Content-Type"] = "application/json";
  }
  const t = token();
  if (t) {
    h.Authorization = "Bearer " + t;
  }
  return h;
}

function send(method, path, body, signal) {
  const init = { method, headers: headers(body !== undefined), cache: "no-store", signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

// answer reads a JSON answer; a status other than 2xx throws the call
// error it carries.
async function answer(res) {
  const text = await res.text();
  let v;
  try {
    v = JSON.parse(text);
  } catch {
    v = { code: "INTERNAL", message: text.trim() || res.statusText };
  }
  if (!res.ok) {
    throw new HTTPCallError(res.status, v);
  }
  return v;
}

async function call(op, input) {
  return answer(await send("POST", "/call", { operation: op, input: input === undefined ? null : input }));
}

function describe(err) {
  if (err instanceof HTTPCallError) {
    return `${err.status} ${err.code}: ${err.message}`;
  }
  if (err && err.code) {
    return `${err.code}: ${err.message}`;
  }
  return String(err && err.message ? err.message : err);
}

function pretty(v) {
  return JSON.stringify(v, null, 2);
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) {
    e.textContent = text;
  }
  if (cls) {
    e.className = cls;
  }
  return e;
}

function banner(text) {
  const b = $("banner");
  b.textContent = text || "";
  b.hidden = !text;
}

// ---- node ----------------------------------------------------------------

async function loadNode() {
  try {
    const { output: info } = await call("node/info");
    $("node-id").textContent = info.id || "";
    $("node-version").textContent = info.version ? `version ${info.version}` : "";
    $("node-alpns").textContent = (info.alpns || []).join(", ") || "none";
    const body = $("plugins-body");
    body.replaceChildren();
    const plugins = info.plugins || null;
    $("plugins").hidden = plugins === null;
    $("plugins-note").hidden = plugins !== null;
    for (const p of plugins || []) {
      const tr = el("tr");
      tr.dataset.plugin = p.name;
      tr.append(el("td", p.name), el("td", p.version || ""));
      const state = el("td", p.state, "state state-" + String(p.state).replace(/[^a-z]/g, ""));
      if (p.error) {
        state.title = p.error;
      }
      tr.append(state, el("td", String(p.restarts ?? 0)));
      body.append(tr);
    }
    banner("");
  } catch (err) {
    $("node-id").textContent = "unknown";
    banner("node/info: " + describe(err));
  }
}

// ---- operations ----------------------------------------------------------

let opsSeq = 0;

async function loadOps() {
  const seq = ++opsSeq;
  const q = $("op-filter").value.trim();
  const list = $("op-list");
  try {
    const res = await answer(await send("GET", "/search?q=" + encodeURIComponent(q)));
    if (seq !== opsSeq) {
      return; // a newer filter answered first
    }
    const ops = (res.operations || []).slice().sort((a, b) => String(a.name).localeCompare(String(b.name)));
    list.replaceChildren();
    for (const op of ops) {
      const li = el("li");
      const b = el("button", undefined, "op");
      b.type = "button";
      b.dataset.name = op.name;
      b.append(el("code", op.name), el("span", op.op_type || "", "badge"));
      if (op.description) {
        b.title = op.description;
      }
      b.addEventListener("click", () => showOp(op.name));
      li.append(b);
      list.append(li);
    }
    $("op-count").textContent = `${ops.length} operation${ops.length === 1 ? "" : "s"}`;
  } catch (err) {
    if (seq === opsSeq) {
      list.replaceChildren();
      $("op-count").textContent = "/search: " + describe(err);
    }
  }
}

// example builds an input skeleton from a JSON Schema: the required
// properties with a value of their type.
function example(schema) {
  if (!schema || typeof schema !== "object") {
    return null;
  }
  if (schema.default !== undefined) {
    return schema.default;
  }
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case "object": {
      const out = {};
      for (const name of schema.required || []) {
        out[name] = example((schema.properties || {})[name]);
      }
      return out;
    }
    case "array":
      return [];
    case "string":
      return "";
    case "integer":
    case "number":
      return typeof schema.minimum === "number" ? schema.minimum : 0;
    case "boolean":
      return false;
  }
  return null;
}

let inputEdited = false;

async function showOp(name) {
  const detail = $("op-detail");
  $("call-op").value = name;
  try {
    const spec = await answer(await send("GET", "/schema?name=" + encodeURIComponent(name)));
    $("op-name").textContent = spec.name || name;
    $("op-type").textContent = spec.op_type || "";
    $("op-desc").textContent = spec.description || "";
    const ac = spec.access_control || {};
    const scopes = [].concat(ac.required_scopes || [], (ac.required_scopes_any || []).length ? ["any of: " + ac.required_scopes_any.join(", ")] : []);
    $("op-access").textContent = scopes.length ? "scopes: " + scopes.join(", ") : "no scope required";
    $("op-input-schema").textContent = spec.input_schema ? pretty(spec.input_schema) : "(any)";
    $("op-output-schema").textContent = spec.output_schema ? pretty(spec.output_schema) : "(any)";
    detail.hidden = false;
    if (!inputEdited) {
      $("call-input").value = pretty(example(spec.input_schema) ?? {});
    }
  } catch (err) {
    $("op-name").textContent = name;
    $("op-type").textContent = "";
    $("op-desc").textContent = "/schema: " + describe(err);
    $("op-access").textContent = "";
    $("op-input-schema").textContent = "";
    $("op-output-schema").textContent = "";
    detail.hidden = false;
  }
}

// ---- run -----------------------------------------------------------------

function status(id, text, kind) {
  const s = $(id);
  s.textContent = text;
  s.className = "status" + (kind ? " " + kind : "");
}

// formInput is the textarea as JSON (empty: null); it throws with the
// reason when it is not JSON.
function formInput() {
  const text = $("call-input").value.trim();
  if (text === "") {
    return null;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error("the input is not JSON: " + err.message);
  }
}

async function runCall(ev) {
  ev.preventDefault();
  const op = $("call-op").value.trim();
  const out = $("call-output");
  let input;
  try {
    input = formInput();
  } catch (err) {
    status("call-status", err.message, "error");
    return;
  }
  status("call-status", `calling ${op}…`, "busy");
  out.textContent = "";
  try {
    const res = await call(op, input);
    out.textContent = pretty(res.output);
    status("call-status", `ok · ${res.request_id || ""}`, "ok");
  } catch (err) {
    out.textContent = err instanceof HTTPCallError ? pretty(err.body) : "";
    status("call-status", describe(err), "error");
  }
}

// A running subscription: stop() aborts it.
let running = null;

function subscribing(on) {
  $("sub-start").disabled = on;
  $("sub-stop").disabled = !on;
}

function addItem(list, item) {
  const li = el("li");
  li.append(el("code", JSON.stringify(item)));
  list.append(li);
  status("sub-status", `running · ${list.children.length} item${list.children.length === 1 ? "" : "s"}`, "busy");
}

function ended(list, how, kind) {
  const n = list.children.length;
  status("sub-status", `${how} · ${n} item${n === 1 ? "" : "s"}`, kind);
}

async function startSubscription() {
  if (running) {
    return;
  }
  const op = $("call-op").value.trim();
  let input;
  try {
    input = formInput();
  } catch (err) {
    status("sub-status", err.message, "error");
    return;
  }
  if (!op) {
    status("sub-status", "name an operation", "error");
    return;
  }
  const list = $("sub-items");
  list.replaceChildren();
  status("sub-status", "running · 0 items", "busy");
  subscribing(true);
  try {
    if ($("sub-transport").value === "ws") {
      await subscribeWS(op, input, list);
    } else {
      await subscribeSSE(op, input, list);
    }
  } catch (err) {
    if (running && running.stopped) {
      ended(list, "stopped", "");
    } else {
      ended(list, "error: " + describe(err), "error");
    }
  } finally {
    running = null;
    subscribing(false);
  }
}

// subscribeSSE reads POST /subscribe as a stream of Server-Sent Events.
async function subscribeSSE(op, input, list) {
  const ac = new AbortController();
  running = { stopped: false, stop: () => ac.abort() };
  const res = await send("POST", "/subscribe", { operation: op, input }, ac.signal);
  if (!res.ok) {
    await answer(res); // throws the call error
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      break;
    }
    buf += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) {
          continue; // a keepalive comment
        }
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const v = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") {
          event = v;
        } else if (field === "data") {
          data.push(v);
        }
      }
      if (data.length === 0) {
        continue;
      }
      const payload = JSON.parse(data.join("\n"));
      if (event === "completed") {
        ended(list, "completed", "ok");
        return;
      }
      if (event === "error") {
        throw Object.assign(new Error(payload.message || ""), { code: payload.code || "INTERNAL" });
      }
      addItem(list, payload);
    }
  }
  throw new Error("the stream ended without completing");
}

// subscribeWS runs the subscription on an alknet/call WebSocket.
async function subscribeWS(op, input, list) {
  const c = connect(defaultURL(), token());
  try {
    const sub = c.subscribe(op, input, (item) => addItem(list, item));
    running = {
      stopped: false,
      stop: () => sub.abort(),
    };
    const how = await sub.done;
    ended(list, how === "aborted" ? "stopped" : "completed", how === "aborted" ? "" : "ok");
  } finally {
    c.close();
  }
}

function stopSubscription() {
  if (running) {
    running.stopped = true;
    running.stop();
  }
}

// ---- start ---------------------------------------------------------------

function refresh() {
  showTokenState();
  loadNode();
  loadOps();
}

function init() {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (t) {
      sessionStorage.setItem(TOKEN_KEY, t);
    }
    $("token").value = "";
    refresh();
  });
  $("token-clear").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    refresh();
  });
  let filterTimer = 0;
  $("op-filter").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(loadOps, 150);
  });
  $("call-input").addEventListener("input", () => {
    inputEdited = $("call-input").value.trim() !== "";
  });
  $("call-form").addEventListener("submit", runCall);
  $("sub-start").addEventListener("click", startSubscription);
  $("sub-stop").addEventListener("click", stopSubscription);
  refresh();
}

init();
