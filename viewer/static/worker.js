// The viewer's network side, in a Web Worker: owns the WebSocket, decodes twin.v1 (msgpack),
// keeps the protocol state (seq, eseq, session; resync on a gap, resume on reconnect), and posts
// decoded frames to the page, which applies them once per animation frame. See docs/protocol.md.
import { decode, encode } from "/vendor/msgpack/dist.esm/index.mjs";

let url = null;
let token = null;
let ws = null;
let session = null;
let seq = null; // the replica's seq (the page applies every frame posted, in order)
let eseqNext = null;
let interest = {};
let chunks = null;
let resyncAsked = false;
let backoff = 250;
let closedByUs = false;

function status(state, detail = "") {
  postMessage({ kind: "status", state, detail });
}

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(encode(msg));
}

function connect() {
  status(session ? "reconnecting" : "connecting");
  // Browsers cannot set an Authorization header on a WebSocket: the token goes as a second
  // subprotocol, which the server never echoes and never logs.
  try {
    ws = new WebSocket(url, ["twin.v1", "bearer." + token]);
  } catch (err) {
    status("error", String(err));
    return;
  }
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    backoff = 250;
  };
  ws.onmessage = (ev) => {
    if (!(ev.data instanceof ArrayBuffer)) return;
    let msg;
    try {
      msg = decode(new Uint8Array(ev.data));
    } catch (err) {
      postMessage({ kind: "protocol_error", detail: String(err) });
      return;
    }
    handle(msg);
  };
  ws.onclose = (ev) => {
    ws = null;
    if (closedByUs) return;
    if (ev.code === 1008 || ev.code === 4002) {
      status("closed", `closed by the server: ${ev.code} ${ev.reason}`);
      return;
    }
    // a refused handshake (bad token) closes with 1006 before any hello
    status(session ? "reconnecting" : "connecting", `connection lost (${ev.code})`);
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 4000);
  };
}

function handle(msg) {
  switch (msg.type) {
    case "hello": {
      const join = { type: "join", ...interest };
      if (session && seq !== null) {
        join.session = session;
        join.last_seq = seq;
        if (eseqNext !== null && eseqNext > 0) join.last_eseq = eseqNext - 1;
      }
      postMessage({ kind: "hello", hello: msg });
      send(join);
      break;
    }
    case "joined":
      session = msg.session;
      eseqNext = msg.eseq;
      if (!msg.resumed) seq = null;
      status(msg.resumed ? "connected" : "resyncing", msg.resumed ? "resumed" : "");
      break;
    case "snapshot": {
      if (!chunks || chunks.seq !== msg.seq) chunks = { seq: msg.seq, parts: [] };
      chunks.parts[msg.chunk] = msg;
      if (chunks.parts.filter(Boolean).length < msg.chunks) break;
      const parts = chunks.parts;
      chunks = null;
      seq = msg.seq;
      resyncAsked = false;
      const frame = { kind: "snapshot", seq, t: msg.t, ts: msg.ts, entities: [], set: [], xf: [] };
      const transfer = [];
      for (const p of parts) {
        frame.entities.push(...p.entities);
        frame.set.push(...(p.set || []));
        const xf = unpackTransforms(p.xf);
        frame.xf.push(xf);
        transfer.push(xf.ids.buffer, xf.pos.buffer, xf.rot.buffer);
      }
      postMessage(frame, transfer);
      status("connected");
      break;
    }
    case "delta": {
      if (seq === null || msg.base_seq !== seq) {
        if (seq !== null && !resyncAsked) {
          resyncAsked = true;
          status("resyncing", "gap");
          send({ type: "resync", reason: "gap" });
        }
        break;
      }
      seq = msg.seq;
      const frame = {
        kind: "delta", seq, t: msg.t, ts: msg.ts,
        rm: msg.rm || [], add: msg.add || [], set: msg.set || [], xf: null,
      };
      const transfer = [];
      if (msg.xf) {
        frame.xf = unpackTransforms(msg.xf);
        transfer.push(frame.xf.ids.buffer, frame.xf.pos.buffer, frame.xf.rot.buffer);
      }
      postMessage(frame, transfer);
      break;
    }
    case "alarm":
    case "command_result":
      eseqNext = msg.eseq + 1;
      postMessage({ kind: "event", event: msg });
      break;
    case "error":
      postMessage({ kind: "server_error", error: msg });
      break;
    default:
      break; // additive protocol changes: ignore what we do not know
  }
}

// The transform block: little-endian u32 ids, f32 xyz, i16 quaternions (x32767). Copies into
// fresh, aligned typed arrays (msgpack bin views may be unaligned) with no per-element decode.
function unpackTransforms(xf) {
  const n = xf.n;
  const ids = new Uint32Array(n);
  const pos = new Float32Array(3 * n);
  const rot = new Int16Array(4 * n);
  new Uint8Array(ids.buffer).set(xf.ids);
  new Uint8Array(pos.buffer).set(xf.pos);
  new Uint8Array(rot.buffer).set(xf.rot);
  return { n, ids, pos, rot };
}

onmessage = (ev) => {
  const m = ev.data;
  if (m.kind === "connect") {
    url = m.url;
    token = m.token;
    interest = m.interest || {};
    closedByUs = false;
    connect();
  } else if (m.kind === "command") {
    send({ type: "command", id: m.id, target: m.target, action: m.action, args: m.args || {} });
  } else if (m.kind === "resync") {
    send({ type: "resync", reason: m.reason || "requested" });
  } else if (m.kind === "close") {
    closedByUs = true;
    if (ws) ws.close(1000, "bye");
  }
};
