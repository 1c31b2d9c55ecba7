// alknet.js: a dependency-free client of the alknet/call protocol
// (docs/spec/call.md) over a WebSocket to a node's /alknet/call, for
// browsers. Each binary message carries one EventEnvelope
// {"type", "id", "payload"}. Both sides may call: the page calls the
// node's operations and serves operations of its own that the node calls
// back on the same socket.
//
//   import { connect } from "/console/alknet.js";
//   const c = connect("wss://node.example/alknet/call", token);
//   await c.ready;
//   const out = await c.call("echo/say", { hello: "node" });
//   const sub = c.subscribe("echo/ticks", { count: 3 }, (item) => console.log(item));
//   await sub.done;                 // "completed", or "aborted" after sub.abort()
//   c.serve("page/hello", async (input) => ({ hi: input }));
//   c.close();
//
// A failed call rejects with a CallError {code, message, retryable, details}.

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

// The subprotocol that selects the alknet/call protocol, and the prefix of
// the one that carries a bearer token (browsers cannot set headers on a
// WebSocket).
export const SUBPROTOCOL = "alknet.call";
const BEARER_PREFIX = "alknet.bearer.";

// A subprotocol is an HTTP token (RFC 9110 §5.6.2).
const TOKEN_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

// CallError is a call error of the protocol (docs/spec/call.md §3).
export class CallError extends Error {
  constructor(code, message, retryable, details) {
    super(message);
    this.name = "CallError";
    this.code = code;
    this.retryable = Boolean(retryable);
    if (details !== undefined) {
      this.details = details;
    }
  }
}

// defaultURL is the /alknet/call endpoint of the node that served the page.
export function defaultURL() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  return scheme + location.host + "/alknet/call";
}

function newID() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") {
    return crypto.randomUUID();
  }
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// wireName is an operation name in its wire form, /svc/op.
function wireName(op) {
  op = String(op);
  return op.startsWith("/") ? op : "/" + op;
}

// errorPayload turns what a served handler threw into a call.error payload.
function errorPayload(err) {
  const code = err && typeof err.code === "string" && err.code !== "" ? err.code : "INTERNAL";
  const message = err && err.message !== undefined ? String(err.message) : String(err);
  const p = { code, message, retryable: Boolean(err && err.retryable) };
  if (err && err.details !== undefined) {
    p.details = err.details;
  }
  return p;
}

// connect opens a call session. url defaults to defaultURL(); token, when
// given, is an alk_… API key (or another token the node accepts) that the
// session acts as. The returned client can be used at once: what it sends
// before the socket is open waits for it. client.ready settles when the
// socket opens (or fails to).
export function connect(url, token) {
  const protocols = [SUBPROTOCOL];
  if (token) {
    if (!TOKEN_CHARS.test(token)) {
      throw new TypeError("this token cannot travel in a WebSocket subprotocol: use an alk_… API key");
    }
    protocols.push(BEARER_PREFIX + token);
  }
  const ws = new WebSocket(url || defaultURL(), protocols);
  ws.binaryType = "arraybuffer";

  const pending = new Map(); // id → our call or subscription
  const serving = new Map(); // id → AbortController of a request we serve
  const handlers = new Map(); // operation name → handler
  let queue = []; // frames sent before the socket opened
  let closed = null; // CallError once the socket closed
  let onClose = null;

  let opened, failed;
  const ready = new Promise((resolve, reject) => {
    opened = resolve;
    failed = reject;
  });
  ready.catch(() => {}); // a caller that never awaits it is not an error

  function send(type, id, payload) {
    const frame = encoder.encode(JSON.stringify({ type, id, payload }));
    if (queue !== null) {
      queue.push(frame);
    } else if (closed === null) {
      ws.send(frame);
    }
  }

  function finish(id) {
    const p = pending.get(id);
    pending.delete(id);
    if (p && p.unlisten) {
      p.unlisten();
    }
    return p;
  }

  ws.addEventListener("open", () => {
    for (const f of queue) {
      ws.send(f);
    }
    queue = null;
    opened();
  });

  ws.addEventListener("close", (ev) => {
    const why = ev.reason ? `: ${ev.reason}` : "";
    closed = new CallError("INTERNAL", `connection closed (${ev.code}${why})`, false);
    queue = null;
    failed(closed);
    for (const id of [...pending.keys()]) {
      finish(id).reject(closed);
    }
    for (const ac of serving.values()) {
      ac.abort(closed);
    }
    serving.clear();
    if (onClose) {
      onClose(closed);
    }
  });

  ws.addEventListener("message", (ev) => {
    let env;
    try {
      const text = typeof ev.data === "string" ? ev.data : decoder.decode(ev.data);
      env = JSON.parse(text);
    } catch {
      return; // malformed: there is no id to answer
    }
    if (!env || typeof env !== "object" || typeof env.type !== "string" || typeof env.id !== "string" || !("payload" in env)) {
      return;
    }
    const { type, id, payload } = env;
    switch (type) {
      case "call.responded": {
        const p = pending.get(id);
        const output = payload && typeof payload === "object" && "output" in payload ? payload.output : null;
        if (!p) {
          return;
        }
        if (p.subscription) {
          p.onItem(output);
        } else {
          finish(id).resolve(output);
        }
        return;
      }
      case "call.completed": {
        const p = pending.get(id);
        if (p && p.subscription) {
          finish(id).resolve("completed");
        }
        return;
      }
      case "call.error": {
        const p = finish(id);
        if (p) {
          const e = payload || {};
          p.reject(new CallError(typeof e.code === "string" ? e.code : "INTERNAL", String(e.message ?? ""), e.retryable, e.details));
        }
        return;
      }
      case "call.aborted": {
        const ac = serving.get(id);
        if (ac) {
          serving.delete(id);
          ac.abort(new CallError("INTERNAL", "request aborted by the caller", false));
        }
        return;
      }
      case "call.requested":
        serve(id, payload || {});
        return;
    }
    // Any other type is ignored (docs/spec/call.md §2).
  });

  // serve answers a request the node sent: the handler's value as
  // call.responded, what it throws as call.error.
  function serve(id, payload) {
    if (serving.has(id)) {
      return; // an id already running is not answered
    }
    const name = String(payload.operationId ?? "").replace(/^\//, "");
    const handler = handlers.get(name);
    if (!handler) {
      send("call.error", id, { code: "NOT_FOUND", message: `operation not found: ${name}`, retryable: false });
      return;
    }
    const ac = new AbortController();
    serving.set(id, ac);
    const input = payload.input === undefined ? null : payload.input;
    Promise.resolve()
      .then(() => handler(input, { id, operation: name, signal: ac.signal }))
      .then(
        (output) => {
          if (!ac.signal.aborted) {
            send("call.responded", id, { output: output === undefined ? null : output });
          }
        },
        (err) => {
          if (!ac.signal.aborted) {
            send("call.error", id, errorPayload(err));
          }
        },
      )
      .finally(() => {
        if (serving.get(id) === ac) {
          serving.delete(id);
        }
      });
  }

  // start sends a request and registers what answers it.
  function start(op, input, entry) {
    const id = newID();
    if (closed !== null) {
      entry.reject(closed);
      return id;
    }
    pending.set(id, entry);
    send("call.requested", id, { operationId: wireName(op), input: input === undefined ? null : input });
    return id;
  }

  function abort(id, reason) {
    const p = finish(id);
    if (p) {
      send("call.aborted", id, {});
      p.aborted(reason);
    }
  }

  const client = {
    ready,
    socket: ws,

    // call runs a query or mutation and resolves to its output. An
    // AbortSignal in options.signal aborts it.
    call(op, input, options = {}) {
      return new Promise((resolve, reject) => {
        const entry = { resolve, reject, aborted: reject };
        const id = start(op, input, entry);
        const signal = options.signal;
        if (signal && pending.has(id)) {
          const onAbort = () => abort(id, signal.reason);
          if (signal.aborted) {
            onAbort();
          } else {
            signal.addEventListener("abort", onAbort, { once: true });
            entry.unlisten = () => signal.removeEventListener("abort", onAbort);
          }
        }
      });
    },

    // subscribe runs a subscription: onItem(item) for each item as it
    // arrives. It returns {id, done, abort()}; done resolves to "completed"
    // when the subscription ends, or "aborted" after abort(), and rejects
    // with the CallError that ended it.
    subscribe(op, input, onItem) {
      let id;
      const done = new Promise((resolve, reject) => {
        id = start(op, input, { subscription: true, onItem, resolve, reject, aborted: () => resolve("aborted") });
      });
      return { id, done, abort: () => abort(id) };
    },

    // serve lets the node call operation op on this page: handler(input,
    // {id, operation, signal}) returns (or resolves to) the output, or
    // throws (an error with a string code sends that code). It returns a
    // function that stops serving op.
    serve(op, handler) {
      const name = String(op).replace(/^\//, "");
      handlers.set(name, handler);
      return () => {
        if (handlers.get(name) === handler) {
          handlers.delete(name);
        }
      };
    },

    // onclose(fn) calls fn(CallError) once the socket has closed.
    onclose(fn) {
      onClose = fn;
    },

    // close ends the session; what is pending fails with "connection closed".
    close() {
      ws.close(1000, "done");
    },
  };
  return client;
}
