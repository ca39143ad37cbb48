/**
 * PulseBeam browser peer SDK: one hand-written ES module with the API of `@pulsebeam/peer` 0.1.0.
 *
 * Served by the PulseBeam server at `/sdk/pulsebeam-peer.js`, usable with no build step:
 *
 *     import { createPeer } from "https://signal.example.com/sdk/pulsebeam-peer.js";
 *     const peer = await createPeer({ token, forceRelay: false });
 *     peer.onsession = (session) => { ... };
 *     peer.start();
 *     await peer.connect("room1", "bob");
 *
 * It speaks `pulsebeam.v1.Signaling` over gRPC-Web (binary) and the official SDK's
 * client-to-client protocol (Join, reliable `seqnum` de-duplication, `generation_counter`, the
 * `__internal` data channel, perfect negotiation with the higher `conn_id` impolite, candidate
 * batches, Bye), so it interoperates with the official SDK and the Python peer. Beyond the
 * official SDK it authenticates every call (`Recv` included), refreshes tokens
 * (`peer.updateToken()` or the `tokenProvider` option), keeps retrying `Join` while the callee is
 * not there yet (NOT_FOUND), and reports the connection path and RTT through `AnalyticsReport`.
 *
 * @module pulsebeam-peer
 */

// ------------------------------------------------------------------------------------------------
// Protobuf, by hand. Why: the SDK must be one file a browser imports as is (no build step) and
// from our own server (no CDN), and the official protobuf runtimes need a bundler. The schema is
// small and fixed (shared/PROTOCOL.md §3), so a table-driven codec of ~150 lines covers it.
// Field tuple: [number, name, type, flag]; type is a scalar name or a message name; flag "r" =
// repeated, "o" = explicit presence (proto3 `optional`), "1" = member of the message's one oneof.

/** @typedef {[number, string, string, ("r"|"o"|"1")?]} FieldSpec */

/** @type {Record<string, FieldSpec[]>} */
const SCHEMA = {
  PrepareReq: [],
  PrepareResp: [[1, "iceServers", "IceServer", "r"]],
  IceServer: [
    [1, "urls", "string", "r"],
    [2, "username", "string", "o"],
    [3, "credential", "string", "o"],
  ],
  SendReq: [[1, "msg", "Message"]],
  SendResp: [],
  RecvReq: [[1, "src", "PeerInfo"]],
  RecvResp: [[1, "msg", "Message"]],
  AnalyticsReportReq: [[1, "reports", "AnalyticsReport", "r"]],
  AnalyticsReportResp: [],
  PeerInfo: [
    [1, "groupId", "string"],
    [2, "peerId", "string"],
    [3, "connId", "uint32"],
  ],
  Message: [
    [1, "header", "MessageHeader"],
    [2, "payload", "MessagePayload"],
  ],
  MessageHeader: [
    [1, "src", "PeerInfo"],
    [2, "dst", "PeerInfo"],
    [7, "seqnum", "uint32"],
    [8, "reliable", "bool"],
  ],
  MessagePayload: [
    [1, "signal", "Signal", "1"],
    [2, "join", "Empty", "1"],
    [3, "bye", "Empty", "1"],
    [4, "ack", "Ack", "1"],
    [5, "ping", "Empty", "1"],
  ],
  Signal: [
    [1, "generationCounter", "uint32"],
    [9, "sdp", "Sdp", "1"],
    [10, "iceCandidate", "ICECandidate", "1"],
    [11, "iceCandidateBatch", "ICECandidateBatch", "1"],
  ],
  Sdp: [
    [1, "kind", "enum"],
    [2, "sdp", "string"],
  ],
  ICECandidate: [
    [1, "candidate", "string"],
    [2, "sdpMLineIndex", "uint32", "o"],
    [3, "sdpMid", "string", "o"],
    [4, "username", "string", "o"],
    [5, "password", "string", "o"],
  ],
  ICECandidateBatch: [[1, "candidates", "ICECandidate", "r"]],
  Empty: [],
  Ack: [[1, "ackRanges", "AckRange", "r"]],
  AckRange: [
    [1, "seqnumStart", "uint32"],
    [2, "seqnumEnd", "uint32"],
  ],
  AnalyticsReport: [
    [1, "tags", "AnalyticsTags"],
    [2, "metrics", "AnalyticsMetrics", "r"],
  ],
  AnalyticsTags: [
    [1, "src", "PeerInfo"],
    [2, "dst", "PeerInfo"],
  ],
  AnalyticsMetrics: [
    [1, "timestampUs", "sint64"],
    [2, "errorEvent", "enum", "o"],
    [3, "iceCandidateEvent", "enum", "o"],
    [4, "signalingEvent", "enum", "o"],
    [5, "userInteractionEvent", "enum", "o"],
    [6, "mediaHandlingEvent", "enum", "o"],
    [7, "iceConnectionType", "enum", "o"],
    [17, "qualityScore", "sint64", "o"],
    [18, "rttUs", "sint64", "o"],
  ],
};

/** `SdpKind` enum values. */
export const SdpKind = Object.freeze({ UNSPECIFIED: 0, OFFER: 1, ANSWER: 2, PRANSWER: 3, ROLLBACK: 4 });

/**
 * Our codes for `AnalyticsMetrics.ice_connection_type` (the schema leaves the numbers open; the
 * server stores them as integers): path (direct/relay) × transport to the relay or peer.
 */
export const IceConnectionType = Object.freeze({
  UNSPECIFIED: 0,
  DIRECT_UDP: 1,
  DIRECT_TCP: 2,
  RELAY_UDP: 3,
  RELAY_TCP: 4,
  RELAY_TLS: 5,
});

/** @type {Record<string, string | number | boolean>} */
const SCALAR_DEFAULTS = { string: "", uint32: 0, bool: false, enum: 0, sint64: 0 };
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });
const U64 = (1n << 64n) - 1n;

/** @param {number[]} out @param {bigint} value */
function writeVarint(out, value) {
  let v = value & U64;
  while (v > 0x7fn) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
}

/** @param {number[]} out @param {Uint8Array} bytes */
function writeBytes(out, bytes) {
  writeVarint(out, BigInt(bytes.length));
  for (const b of bytes) out.push(b);
}

/**
 * Encode a plain object as protobuf.
 * @param {string} type a message name of the schema, e.g. "SendReq"
 * @param {Record<string, any>} value
 * @returns {Uint8Array}
 */
export function encodeMessage(type, value) {
  const spec = SCHEMA[type];
  if (spec === undefined) throw new TypeError(`protobuf: unknown message type ${type}`);
  /** @type {number[]} */
  const out = [];
  for (const [no, name, kind, flag] of spec) {
    const v = value?.[name];
    if (v === undefined || v === null) continue;
    for (const item of flag === "r" ? v : [v]) {
      const scalar = kind in SCALAR_DEFAULTS;
      // proto3: a plain scalar at its default is not written; explicit presence writes it.
      if (scalar && flag !== "o" && flag !== "r" && item === SCALAR_DEFAULTS[kind]) continue;
      if (kind === "string") {
        writeVarint(out, BigInt((no << 3) | 2));
        writeBytes(out, utf8Encoder.encode(String(item)));
      } else if (kind === "uint32") {
        writeVarint(out, BigInt(no << 3));
        writeVarint(out, BigInt(item >>> 0));
      } else if (kind === "bool") {
        writeVarint(out, BigInt(no << 3));
        out.push(item ? 1 : 0);
      } else if (kind === "enum") {
        writeVarint(out, BigInt(no << 3));
        writeVarint(out, BigInt(item | 0)); // int32: negatives sign-extend to 64 bits
      } else if (kind === "sint64") {
        const n = BigInt.asIntN(64, BigInt(item));
        writeVarint(out, BigInt(no << 3));
        writeVarint(out, (n << 1n) ^ (n >> 63n)); // zigzag
      } else {
        writeVarint(out, BigInt((no << 3) | 2));
        writeBytes(out, encodeMessage(kind, item));
      }
    }
  }
  return Uint8Array.from(out);
}

class Reader {
  /** @param {Uint8Array} bytes */
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0;
  }

  /** @returns {bigint} */
  varint() {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= this.bytes.length) throw new Error("protobuf: truncated varint");
      const b = this.bytes[this.pos++];
      result |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return result & U64;
    }
    throw new Error("protobuf: varint longer than 10 bytes");
  }

  /** @param {number} n */
  take(n) {
    if (n < 0 || this.pos + n > this.bytes.length) throw new Error("protobuf: truncated field");
    const chunk = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return chunk;
  }

  /** @param {number} wire */
  skip(wire) {
    if (wire === 0) this.varint();
    else if (wire === 1) this.take(8);
    else if (wire === 2) this.take(Number(this.varint()));
    else if (wire === 5) this.take(4);
    else throw new Error(`protobuf: unsupported wire type ${wire}`);
  }
}

/**
 * Decode protobuf bytes into a plain object (scalars default as in proto3; absent messages and
 * `optional` fields stay undefined; unknown fields are skipped).
 * @param {string} type
 * @param {Uint8Array} bytes
 * @returns {Record<string, any>}
 */
export function decodeMessage(type, bytes) {
  const spec = SCHEMA[type];
  if (spec === undefined) throw new TypeError(`protobuf: unknown message type ${type}`);
  /** @type {Record<string, any>} */
  const result = {};
  /** @type {Map<number, FieldSpec>} */
  const byNumber = new Map();
  for (const field of spec) {
    byNumber.set(field[0], field);
    const [, name, kind, flag] = field;
    if (flag === "r") result[name] = [];
    else if (kind in SCALAR_DEFAULTS && flag === undefined) result[name] = SCALAR_DEFAULTS[kind];
  }
  const reader = new Reader(bytes);
  while (reader.pos < bytes.length) {
    const key = reader.varint();
    const no = Number(key >> 3n);
    const wire = Number(key & 7n);
    const field = byNumber.get(no);
    if (field === undefined) {
      reader.skip(wire);
      continue;
    }
    const [, name, kind, flag] = field;
    const expected = kind === "string" || !(kind in SCALAR_DEFAULTS) ? 2 : 0;
    if (wire !== expected) throw new Error(`protobuf: ${type}.${name} has wire type ${wire}`);
    let value;
    if (kind === "string") value = utf8Decoder.decode(reader.take(Number(reader.varint())));
    else if (kind === "uint32") value = Number(reader.varint() & 0xffffffffn);
    else if (kind === "bool") value = reader.varint() !== 0n;
    else if (kind === "enum") value = Number(BigInt.asIntN(32, reader.varint()));
    else if (kind === "sint64") {
      const z = reader.varint();
      value = Number(BigInt.asIntN(64, (z >> 1n) ^ -(z & 1n)));
    } else value = decodeMessage(kind, reader.take(Number(reader.varint())));
    if (flag === "r") result[name].push(value);
    else {
      if (flag === "1") for (const other of spec) if (other[3] === "1") delete result[other[1]];
      result[name] = value;
    }
  }
  return result;
}

// ------------------------------------------------------------------------------------------------
// gRPC-Web binary framing: 1 flag byte, 4-byte big-endian length, payload; flag 0x80 = trailers.

/** gRPC status codes. */
export const GrpcCode = Object.freeze({
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
});
const CODE_NAMES = Object.fromEntries(Object.entries(GrpcCode).map(([k, v]) => [v, k]));

/** The codes the official SDK treats as fatal (shared/PROTOCOL.md §3); others are retried. */
/** @type {Set<number>} */
const FATAL_CODES = new Set([
  GrpcCode.PERMISSION_DENIED,
  GrpcCode.INVALID_ARGUMENT,
  GrpcCode.ABORTED,
  GrpcCode.NOT_FOUND,
  GrpcCode.UNAUTHENTICATED,
]);

/** An error of a signaling call or of the SDK, with its gRPC status code. */
export class PulseBeamError extends Error {
  /** @param {number} code a {@link GrpcCode} @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = "PulseBeamError";
    /** @type {number} */
    this.code = code;
    /** @type {string} */
    this.codeName = CODE_NAMES[code] ?? `CODE_${code}`;
  }
}

/**
 * @param {Uint8Array} payload
 * @param {number} [flag]
 */
export function encodeFrame(payload, flag = 0) {
  const frame = new Uint8Array(5 + payload.length);
  frame[0] = flag;
  new DataView(frame.buffer).setUint32(1, payload.length);
  frame.set(payload, 5);
  return frame;
}

/** Splits a byte stream into gRPC-Web frames, whatever the chunk boundaries. */
export class FrameParser {
  constructor() {
    this.buffer = new Uint8Array(0);
  }

  /**
   * @param {Uint8Array} chunk
   * @returns {{flag: number, data: Uint8Array}[]} the frames completed by this chunk
   */
  push(chunk) {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    const frames = [];
    let pos = 0;
    while (joined.length - pos >= 5) {
      const length = new DataView(joined.buffer, pos + 1, 4).getUint32(0);
      if (joined.length - pos - 5 < length) break;
      frames.push({ flag: joined[pos], data: joined.slice(pos + 5, pos + 5 + length) });
      pos += 5 + length;
    }
    this.buffer = joined.slice(pos);
    return frames;
  }
}

/**
 * Parse a trailers frame (`name: value\r\n` lines) into lower-cased names.
 * @param {Uint8Array} data
 * @returns {Map<string, string>}
 */
export function parseTrailers(data) {
  const trailers = new Map();
  for (const line of new TextDecoder().decode(data).split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) trailers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return trailers;
}

/** @param {string | null | undefined} status @param {string | null | undefined} message */
function statusError(status, message) {
  const code = Number(status);
  if (!Number.isInteger(code) || code === GrpcCode.OK) return null;
  let text = message ?? "";
  try {
    text = decodeURIComponent(text);
  } catch {
    // not percent-encoded: keep as is
  }
  return new PulseBeamError(code, text || CODE_NAMES[code] || `status ${code}`);
}

/** @param {number} status */
function httpStatusCode(status) {
  if (status === 401) return GrpcCode.UNAUTHENTICATED;
  if (status === 403) return GrpcCode.PERMISSION_DENIED;
  if (status === 404) return GrpcCode.UNIMPLEMENTED;
  if (status === 429 || status === 502 || status === 503 || status === 504) return GrpcCode.UNAVAILABLE;
  return GrpcCode.UNKNOWN;
}

const SERVICE = "pulsebeam.v1.Signaling";
const UNARY_TIMEOUT_MS = 10_000;

/** Minimal gRPC-Web client for `pulsebeam.v1.Signaling`; the token is read at every call. */
class SignalingClient {
  /** @param {string} baseUrl @param {() => string} token */
  constructor(baseUrl, token) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.token = token;
  }

  /**
   * @param {string} method
   * @param {Uint8Array} body
   * @param {string} timeout a grpc-timeout value
   * @param {AbortSignal} signal
   * @param {boolean} keepalive let the request outlive the page (a `Bye` sent on unload)
   */
  async #post(method, body, timeout, signal, keepalive) {
    let response;
    try {
      response = await fetch(`${this.baseUrl}/${SERVICE}/${method}`, {
        method: "POST",
        headers: {
          "content-type": "application/grpc-web+proto",
          "x-grpc-web": "1",
          "grpc-timeout": timeout,
          authorization: `Bearer ${this.token()}`,
        },
        body: encodeFrame(body),
        signal,
        cache: "no-store",
        credentials: "omit",
        keepalive,
      });
    } catch (err) {
      if (signal.aborted) throw signal.reason ?? err;
      throw new PulseBeamError(
        GrpcCode.UNAVAILABLE,
        `cannot reach the signaling server at ${this.baseUrl} (${/** @type {Error} */ (err).message})`,
      );
    }
    if (response.status !== 200) {
      const text = (await response.text().catch(() => "")).trim().slice(0, 200);
      throw new PulseBeamError(httpStatusCode(response.status), `HTTP ${response.status} ${text}`.trim());
    }
    const headerError = statusError(response.headers.get("grpc-status"), response.headers.get("grpc-message"));
    if (headerError) throw headerError;
    if (response.body === null) throw new PulseBeamError(GrpcCode.INTERNAL, "empty gRPC-Web response");
    return response.body.getReader();
  }

  /**
   * A unary call.
   * @param {string} method
   * @param {string} reqType
   * @param {Record<string, any>} request
   * @param {string} respType
   * @param {AbortSignal} [signal]
   * @param {boolean} [keepalive]
   */
  async unary(method, reqType, request, respType, signal, keepalive = false) {
    const timeout = AbortSignal.timeout(UNARY_TIMEOUT_MS);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    let reply;
    try {
      for await (const message of this.#frames(method, reqType, request, respType, combined, `${UNARY_TIMEOUT_MS}m`, undefined, keepalive)) {
        reply = message;
      }
    } catch (err) {
      if (timeout.aborted && !signal?.aborted) {
        throw new PulseBeamError(GrpcCode.DEADLINE_EXCEEDED, `${method} took longer than ${UNARY_TIMEOUT_MS} ms`);
      }
      throw err;
    }
    if (reply === undefined) throw new PulseBeamError(GrpcCode.INTERNAL, `${method}: no response message`);
    return reply;
  }

  /**
   * A server stream: yields decoded messages; `onOpen` runs once the server accepted the call.
   * @param {string} method
   * @param {string} reqType
   * @param {Record<string, any>} request
   * @param {string} respType
   * @param {AbortSignal} signal
   * @param {() => void} onOpen
   */
  async *stream(method, reqType, request, respType, signal, onOpen) {
    yield* this.#frames(method, reqType, request, respType, signal, "900000m", onOpen);
  }

  /**
   * @param {string} method
   * @param {string} reqType
   * @param {Record<string, any>} request
   * @param {string} respType
   * @param {AbortSignal} signal
   * @param {string} timeout
   * @param {() => void} [onOpen]
   * @param {boolean} [keepalive]
   */
  async *#frames(method, reqType, request, respType, signal, timeout, onOpen, keepalive = false) {
    const reader = await this.#post(method, encodeMessage(reqType, request), timeout, signal, keepalive);
    onOpen?.();
    const parser = new FrameParser();
    try {
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (signal.aborted) throw signal.reason ?? err;
          throw new PulseBeamError(GrpcCode.UNAVAILABLE, `${method}: connection lost (${/** @type {Error} */ (err).message})`);
        }
        if (chunk.done) break;
        for (const frame of parser.push(chunk.value)) {
          if (frame.flag & 0x80) {
            const trailers = parseTrailers(frame.data);
            const error = statusError(trailers.get("grpc-status") ?? "2", trailers.get("grpc-message"));
            if (error) throw error;
            return;
          }
          if (frame.flag !== 0) throw new PulseBeamError(GrpcCode.INTERNAL, `${method}: compressed frame not supported`);
          yield decodeMessage(respType, frame.data);
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
    throw new PulseBeamError(GrpcCode.UNAVAILABLE, `${method}: stream ended without a status`);
  }
}

// ------------------------------------------------------------------------------------------------
// Tokens: the SDK reads gid/pid/exp from the token (unverified; the server verifies).

const ID_PATTERN = /^[a-zA-Z0-9_-]{1,36}$/;

/**
 * @typedef {object} TokenClaims
 * @property {string} groupId
 * @property {string} peerId
 * @property {number} expiresAt unix seconds
 */

/**
 * Read the group, peer and expiry of a PulseBeam token without verifying it.
 * @param {string} token
 * @returns {TokenClaims}
 */
export function readToken(token) {
  const parts = typeof token === "string" ? token.trim().split(".") : [];
  if (parts.length !== 3) {
    throw new PulseBeamError(GrpcCode.UNAUTHENTICATED, "the token is not a PulseBeam token (expected three dot-separated parts)");
  }
  let claims;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
    claims = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new PulseBeamError(GrpcCode.UNAUTHENTICATED, "the token's payload is not base64url JSON");
  }
  const { gid, pid, exp } = claims ?? {};
  if (typeof gid !== "string" || typeof pid !== "string" || typeof exp !== "number") {
    throw new PulseBeamError(GrpcCode.UNAUTHENTICATED, "the token lacks its gid, pid or exp claim");
  }
  return { groupId: gid, peerId: pid, expiresAt: exp };
}

// ------------------------------------------------------------------------------------------------
// Small helpers

/** @param {number} ms @param {AbortSignal} [signal] */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(undefined); }, { once: true });
  });
}

/** Backoff of `Recv` reopening and retries: 250 ms base, doubling, 1 s cap, with jitter.
 * @param {number} attempt */
function backoff(attempt) {
  return Math.min(1000, 250 * 2 ** attempt) * (0.75 + Math.random() * 0.5);
}

/** @param {{groupId: string, peerId: string, connId: number}} info */
const keyOf = (info) => `${info.groupId}/${info.peerId}/${info.connId}`;

/** A random connection id outside the reserved range 0–16. */
function randomConnId() {
  const [n] = crypto.getRandomValues(new Uint32Array(1));
  return n > 16 ? n : n + 17;
}

/** @param {string} id @param {string} what */
function checkId(id, what) {
  if (typeof id !== "string" || !ID_PATTERN.test(id)) {
    throw new PulseBeamError(GrpcCode.INVALID_ARGUMENT, `${what} must be 1-36 characters of a-z, A-Z, 0-9, _ or - (got ${JSON.stringify(id)})`);
  }
}

const INTERNAL_LABEL = "__internal";
const CANDIDATE_FLUSH_MS = 100;
const JOIN_INTERVAL_MS = 1000;
const SEND_ATTEMPTS = 5;
const ICE_RESTART_DEBOUNCE_MS = 5000;
const MAX_ICE_RESTARTS = 3;
const ANALYTICS_INTERVAL_MS = 15_000;
const SEEN_SEQNUMS = 1024;
const ROTATE_OVERLAP_MS = 3000;
const FIRST_OFFER_WAIT_MS = 3000;

// ------------------------------------------------------------------------------------------------
// Session

/**
 * @typedef {object} PeerInfo
 * @property {string} groupId
 * @property {string} peerId
 * @property {number} connId
 */

/**
 * @typedef {object} ConnectionInfo
 * @property {"direct" | "relay"} path
 * @property {string} protocol transport to the peer or relay: udp, tcp or tls
 * @property {number | null} rttMs round-trip time of the selected candidate pair
 * @property {string} localType local candidate type (host, srflx, prflx, relay)
 * @property {string} remoteType remote candidate type
 * @property {string | null} relayUrl the TURN server URL when our side relays
 */

/** One WebRTC session with one remote connection `other`; made by {@link Peer}, not directly. */
export class Session {
  /** @type {((event: RTCTrackEvent) => void) | null} */
  ontrack = null;
  /** @type {((channel: RTCDataChannel) => void) | null} */
  ondatachannel = null;
  /** @type {((state: RTCPeerConnectionState) => void) | null} */
  onconnectionstatechange = null;
  /** Why the session ended, once it has. @type {string | null} */
  closeReason = null;

  #peer;
  /** @type {(msg: Record<string, any>) => Promise<void>} */
  #send;
  #pc;
  #impolite;
  #generation = 0;
  #nextSeqnum = 0;
  /** @type {Set<number>} */
  #seen = new Set();
  #makingOffer = false;
  #ignoreOffer = false;
  /** @type {RTCIceCandidateInit[]} */
  #pendingRemote = [];
  /** @type {Record<string, any>[]} */
  #localCandidates = [];
  /** @type {ReturnType<typeof setTimeout> | null} */
  #flushTimer = null;
  #inbox = Promise.resolve();
  #outbox = Promise.resolve();
  #closed = false;
  #iceRestarts = 0;
  #lastRestart = 0;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #restartTimer = null;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #firstOfferTimer = null;

  /**
   * @param {Peer} peer
   * @param {PeerInfo} other
   * @param {RTCConfiguration} config
   * @param {(msg: Record<string, any>) => Promise<void>} send `Send` with retries
   */
  constructor(peer, other, config, send) {
    /** The remote connection of this session. @type {PeerInfo} */
    this.other = Object.freeze({ ...other });
    this.#peer = peer;
    this.#send = send;
    const me = peer.info;
    // Higher conn_id is impolite; ties broken by peer_id (shared/PROTOCOL.md §3).
    this.#impolite = me.connId !== other.connId ? me.connId > other.connId : me.peerId > other.peerId;
    const pc = (this.#pc = new RTCPeerConnection(config));
    pc.onnegotiationneeded = () => this.#negotiate();
    pc.onicecandidate = (event) => this.#queueCandidate(event.candidate);
    pc.ontrack = (event) => this.ontrack?.(event);
    pc.ondatachannel = (event) => {
      if (event.channel.label !== INTERNAL_LABEL) this.ondatachannel?.(event.channel);
    };
    pc.onconnectionstatechange = () => this.#onConnectionState();
    pc.onicecandidateerror = (event) => peer._log("ICE candidate error", event.url, event.errorCode, event.errorText);
    pc.oniceconnectionstatechange = () => {
      peer._log("ICE", keyOf(other), pc.iceConnectionState);
      if (pc.iceConnectionState === "failed") this.#scheduleIceRestart();
    };
    // Both sides create it at start (PROTOCOL.md §4); #negotiate decides who offers first.
    this.internalChannel = pc.createDataChannel(INTERNAL_LABEL);
  }

  /** The RTCPeerConnection's state, or "closed" once the session ended. */
  get connectionState() {
    return this.#closed ? "closed" : this.#pc.connectionState;
  }

  /** True when this side ignores colliding offers (its conn_id is the higher one). */
  get impolite() {
    return this.#impolite;
  }

  /** @param {MediaStreamTrack} track @param {...MediaStream} streams */
  addTrack(track, ...streams) {
    this.#checkOpen();
    return this.#pc.addTrack(track, ...streams);
  }

  /** @param {RTCRtpSender} sender */
  removeTrack(sender) {
    this.#checkOpen();
    this.#pc.removeTrack(sender);
  }

  /** @param {string} label @param {RTCDataChannelInit} [init] */
  createDataChannel(label, init) {
    this.#checkOpen();
    if (label === INTERNAL_LABEL) throw new TypeError(`the data channel label ${INTERNAL_LABEL} is reserved`);
    return this.#pc.createDataChannel(label, init);
  }

  /** @param {MediaStreamTrack | null} [selector] */
  getStats(selector) {
    return this.#pc.getStats(selector);
  }

  /**
   * The selected path (direct or relay) and RTT, from `getStats`; null until connected.
   * @returns {Promise<ConnectionInfo | null>}
   */
  async getConnectionInfo() {
    if (this.#closed) return null;
    const stats = await this.#pc.getStats();
    /** @type {any} */
    let pair;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) stats.forEach((s) => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    if (!local || !remote) return null;
    const relayed = local.candidateType === "relay" || remote.candidateType === "relay";
    return {
      path: relayed ? "relay" : "direct",
      protocol: (local.candidateType === "relay" ? local.relayProtocol : local.protocol) ?? "udp",
      rttMs: typeof pair.currentRoundTripTime === "number" ? pair.currentRoundTripTime * 1000 : null,
      localType: local.candidateType,
      remoteType: remote.candidateType,
      relayUrl: local.candidateType === "relay" ? local.url ?? null : null,
    };
  }

  /** End the session: tell the other side (`Bye`) and close the connection. @param {string} [reason] */
  close(reason = "closed") {
    if (this.#closed) return;
    this.#sendMessage({ bye: {} }, false);
    this.#shutdown(reason);
  }

  /** @param {string} reason */
  #shutdown(reason) {
    if (this.#closed) return;
    this.#closed = true;
    this.closeReason = reason;
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    if (this.#firstOfferTimer) clearTimeout(this.#firstOfferTimer);
    this.#pc.close();
    this.#peer._sessionClosed(this);
    this.onconnectionstatechange?.("closed");
  }

  #checkOpen() {
    if (this.#closed) throw new PulseBeamError(GrpcCode.FAILED_PRECONDITION, `session with ${keyOf(this.other)} is closed`);
  }

  #onConnectionState() {
    const state = this.#pc.connectionState;
    if (this.#closed || state === "closed") return;
    if (state === "connected") this.#peer._sessionConnected(this);
    if (state === "failed") this.#scheduleIceRestart();
    this.onconnectionstatechange?.(state);
  }

  #scheduleIceRestart() {
    if (this.#closed || this.#restartTimer) return;
    if (this.#iceRestarts >= MAX_ICE_RESTARTS) {
      this.close(`ICE failed after ${MAX_ICE_RESTARTS} restarts`);
      return;
    }
    const wait = Math.max(0, this.#lastRestart + ICE_RESTART_DEBOUNCE_MS - Date.now());
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = null;
      const state = this.#pc.iceConnectionState;
      if (this.#closed || (state !== "failed" && state !== "disconnected")) return;
      this.#iceRestarts += 1;
      this.#lastRestart = Date.now();
      this.#generation += 1;
      this.#peer._log("ICE restart", keyOf(this.other), "generation", this.#generation);
      this.#pc.setConfiguration(this.#peer._rtcConfig()); // fresh TURN credentials
      this.#pc.restartIce();
    }, wait);
  }

  // -- sending ----------------------------------------------------------------------------------

  /** @param {Record<string, any>} payload @param {boolean} reliable */
  #sendMessage(payload, reliable) {
    const msg = {
      header: { src: this.#peer.info, dst: this.other, seqnum: this.#nextSeqnum, reliable },
      payload,
    };
    this.#nextSeqnum = (this.#nextSeqnum + 1) >>> 0;
    this.#peer._log("send", keyOf(this.other), msg.header.seqnum, describe(payload));
    // One at a time, in order, so the other side sees our seqnums ascending.
    this.#outbox = this.#outbox.then(() => this.#send(msg)).catch((err) => {
      if (reliable) this.#shutdown(`signaling failed: ${err.message}`);
    });
  }

  /** @param {Record<string, any>} signal */
  #sendSignal(signal) {
    this.#sendMessage({ signal: { generationCounter: this.#generation, ...signal } }, true);
  }

  /** @param {boolean} [force] offer even as the polite side before the first exchange */
  async #negotiate(force = false) {
    if (this.#closed) return;
    if (!this.#impolite && !force && !this.#pc.remoteDescription) {
      // The first offer is the impolite side's (our Join makes sure it has a session). Both
      // offering at once works by perfect negotiation, but Chromium then sometimes gathers no
      // candidates after the implicit rollback; so wait, and offer only if none comes.
      this.#firstOfferTimer ??= setTimeout(() => {
        if (!this.#pc.remoteDescription) this.#negotiate(true);
      }, FIRST_OFFER_WAIT_MS);
      return;
    }
    try {
      this.#makingOffer = true;
      await this.#pc.setLocalDescription();
      this.#sendDescription();
    } catch (err) {
      this.#peer._log("offer failed", err);
    } finally {
      this.#makingOffer = false;
    }
  }

  #sendDescription() {
    const desc = this.#pc.localDescription;
    if (!desc) return;
    const kind = desc.type === "offer" ? SdpKind.OFFER : desc.type === "answer" ? SdpKind.ANSWER : SdpKind.PRANSWER;
    this.#sendSignal({ sdp: { kind, sdp: desc.sdp } });
  }

  /** @param {RTCIceCandidate | null} candidate */
  #queueCandidate(candidate) {
    if (!candidate || !candidate.candidate || this.#closed) return; // end-of-candidates: nothing to send
    this.#localCandidates.push({
      candidate: candidate.candidate,
      sdpMLineIndex: candidate.sdpMLineIndex ?? undefined,
      sdpMid: candidate.sdpMid ?? undefined,
      username: candidate.usernameFragment ?? undefined,
    });
    // Batched: flushed 100 ms after the first one is queued.
    this.#flushTimer ??= setTimeout(() => {
      this.#flushTimer = null;
      const candidates = this.#localCandidates.splice(0);
      if (candidates.length && !this.#closed) this.#sendSignal({ iceCandidateBatch: { candidates } });
    }, CANDIDATE_FLUSH_MS);
  }

  // -- receiving --------------------------------------------------------------------------------

  /** A message from `other`, in arrival order. @param {Record<string, any>} msg */
  _receive(msg) {
    if (this.#closed) return;
    const { seqnum, reliable } = msg.header;
    if (reliable) {
      if (this.#seen.has(seqnum)) return; // a retried Send delivered twice
      this.#seen.add(seqnum);
      const oldest = this.#seen.values().next().value;
      if (this.#seen.size > SEEN_SEQNUMS && oldest !== undefined) this.#seen.delete(oldest);
    }
    this.#inbox = this.#inbox.then(() => this.#handle(msg.payload)).catch((err) => this.#peer._log("signal failed", err));
  }

  /** @param {Record<string, any>} payload */
  async #handle(payload) {
    if (this.#closed) return;
    this.#peer._log("recv", keyOf(this.other), describe(payload));
    if (payload.bye) {
      this.#shutdown("the other peer left");
      return;
    }
    const signal = payload.signal;
    if (!signal) return; // Join on a live session, Ack, Ping: nothing to do
    if (signal.generationCounter < this.#generation) return; // stale (before an ICE restart)
    if (signal.generationCounter > this.#generation) {
      this.#generation = signal.generationCounter;
      this.#pendingRemote = [];
    }
    if (signal.sdp) await this.#onSdp(signal.sdp);
    const candidates = signal.iceCandidateBatch?.candidates ?? (signal.iceCandidate ? [signal.iceCandidate] : []);
    for (const c of candidates) {
      const init = {
        candidate: c.candidate,
        sdpMid: c.sdpMid ?? null,
        sdpMLineIndex: c.sdpMLineIndex ?? (c.sdpMid === undefined ? 0 : null),
        usernameFragment: c.username ?? null,
      };
      if (this.#pc.remoteDescription) await this.#addCandidate(init);
      else this.#pendingRemote.push(init);
    }
  }

  /** @param {{kind: number, sdp: string}} sdp */
  async #onSdp(sdp) {
    const pc = this.#pc;
    const type = sdp.kind === SdpKind.OFFER ? "offer" : sdp.kind === SdpKind.ANSWER ? "answer" : sdp.kind === SdpKind.PRANSWER ? "pranswer" : null;
    if (!type) return;
    const collision = type === "offer" && (this.#makingOffer || pc.signalingState !== "stable");
    this.#ignoreOffer = this.#impolite && collision;
    if (this.#ignoreOffer) return;
    if (type !== "offer" && pc.signalingState !== "have-local-offer") return; // an answer to nothing
    await pc.setRemoteDescription({ type, sdp: sdp.sdp }); // polite side: implicit rollback
    if (type === "offer") {
      await pc.setLocalDescription();
      this.#sendDescription();
    }
    for (const init of this.#pendingRemote.splice(0)) await this.#addCandidate(init);
  }

  /** @param {RTCIceCandidateInit} init */
  async #addCandidate(init) {
    try {
      await this.#pc.addIceCandidate(init);
    } catch (err) {
      if (!this.#ignoreOffer) this.#peer._log("remote candidate refused", init.candidate, err);
    }
  }

  /** Start a session from our side (the impolite side's offer comes from negotiationneeded). */
  _hello() {
    this.#sendMessage({ join: {} }, false);
  }
}

// ------------------------------------------------------------------------------------------------
// Peer

/**
 * @typedef {"new" | "connecting" | "connected" | "reconnecting" | "closed"} PeerState
 */

/**
 * @typedef {object} PeerOptions
 * @property {string} token a PulseBeam token (minted by your back end with the server SDK)
 * @property {string} [baseUrl] the signaling URL ending in `/grpc`; default: the server this module came from
 * @property {boolean} [forceRelay] relay-only ICE (`iceTransportPolicy: "relay"`)
 * @property {RTCIceServer[]} [iceServers] extra ICE servers, before the ones `Prepare` returns
 * @property {boolean} [disableAnalytics] do not send `AnalyticsReport`
 * @property {() => Promise<string>} [tokenProvider] returns a fresh token; called before expiry and on UNAUTHENTICATED
 * @property {boolean} [debug] log protocol events to the console
 */

/** A connection to the signaling server under one token; sessions come through `onsession`. */
export class Peer {
  /** @type {((session: Session) => void) | null} */
  onsession = null;
  /** @type {((state: PeerState) => void) | null} */
  onstatechange = null;
  /** Called with the error that closed the peer (bad or expired token, ...). @type {((error: PulseBeamError) => void) | null} */
  onerror = null;
  /** The error that closed the peer, if any. @type {PulseBeamError | null} */
  error = null;

  /** @type {PeerState} */
  #state = "new";
  #client;
  #token;
  #options;
  /** @type {RTCConfiguration} */
  #rtcConfig;
  /** @type {Map<string, Session>} */
  #sessions = new Map();
  /** @type {Set<{groupId: string, peerId: string, resolve: (s: Session) => void}>} */
  #waiters = new Set();
  #stop = new AbortController();
  /** Asks the receive loop to open a stream under the current token. @type {(() => void) | null} */
  #rotate = null;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #refreshTimer = null;
  /** @type {ReturnType<typeof setInterval> | null} */
  #analyticsTimer = null;

  /**
   * @param {PeerOptions} options
   * @param {SignalingClient} client
   * @param {RTCIceServer[]} iceServers
   * @param {string} token the token `Prepare` accepted
   * @param {(token: string) => void} setToken makes the client send another token
   */
  constructor(options, client, iceServers, token, setToken) {
    const claims = readToken(token);
    this.#options = options;
    this.#client = client;
    this.#token = { set: setToken, expiresAt: claims.expiresAt };
    this.#rtcConfig = { iceServers, iceTransportPolicy: options.forceRelay ? "relay" : "all" };
    /** This connection's identity. @type {PeerInfo} */
    this.info = Object.freeze({ groupId: claims.groupId, peerId: claims.peerId, connId: randomConnId() });
  }

  /** The RTCConfiguration for new connections and ICE restarts. */
  _rtcConfig() {
    return this.#rtcConfig;
  }

  /** Our peer id (from the token). */
  get peerId() {
    return this.info.peerId;
  }

  /** Our group id (from the token). */
  get groupId() {
    return this.info.groupId;
  }

  /** @returns {PeerState} */
  get state() {
    return this.#state;
  }

  /** The live sessions. @returns {Session[]} */
  get sessions() {
    return [...this.#sessions.values()];
  }

  #isClosed() {
    return this.#state === "closed";
  }

  /** @param {PeerState} state */
  #setState(state) {
    if (this.#state === state || this.#state === "closed") return;
    this.#state = state;
    this.onstatechange?.(state);
  }

  /** @param {...any} args */
  _log(...args) {
    if (this.#options.debug) console.debug("[pulsebeam]", ...args);
  }

  /** Open the receive stream (reopened with backoff for as long as the peer lives). */
  start() {
    if (this.#state !== "new") return;
    this.#setState("connecting");
    this.#recvLoop();
    this.#scheduleRefresh();
    if (!this.#options.disableAnalytics) {
      this.#analyticsTimer = setInterval(() => this.#reportAnalytics(), ANALYTICS_INTERVAL_MS);
    }
  }

  /**
   * Replace the token (same group and peer), e.g. before it expires; the receive stream is
   * reopened under it, so the server holds the new expiry.
   * @param {string} token
   */
  updateToken(token) {
    const claims = readToken(token);
    if (claims.groupId !== this.info.groupId || claims.peerId !== this.info.peerId) {
      throw new PulseBeamError(GrpcCode.INVALID_ARGUMENT, `the new token is for ${claims.groupId}/${claims.peerId}, not ${this.info.groupId}/${this.info.peerId}`);
    }
    this.#token.set(token);
    this.#token.expiresAt = claims.expiresAt;
    this.#rotate?.();
    this.#scheduleRefresh();
    this.#renewIceServers();
  }

  /** TURN credentials expire with the token they were made for: fetch new ones for new
   * sessions and for ICE restarts of the live ones (a live connection keeps its own). */
  async #renewIceServers() {
    try {
      const iceServers = await prepare(this.#client, this.#options);
      this.#rtcConfig = { ...this.#rtcConfig, iceServers };
    } catch (err) {
      this._log("renewing the ICE servers failed", err);
    }
  }

  #scheduleRefresh() {
    if (this.#refreshTimer) clearTimeout(this.#refreshTimer);
    if (!this.#options.tokenProvider || this.#state === "closed") return;
    const left = this.#token.expiresAt * 1000 - Date.now();
    const margin = Math.max(5000, Math.min(60_000, left * 0.2));
    this.#refreshTimer = setTimeout(() => this.#refresh().catch((err) => this._log("token refresh failed", err)), Math.max(1000, left - margin));
  }

  /** Ask the token provider for a new token; false if there is none or it failed. */
  async #refresh() {
    if (!this.#options.tokenProvider || this.#state === "closed") return false;
    try {
      this.updateToken(await this.#options.tokenProvider());
      return true;
    } catch (err) {
      this._log("token provider failed", err);
      this.#scheduleRefresh();
      return false;
    }
  }

  async #recvLoop() {
    let attempt = 0;
    while (this.#state !== "closed") {
      const abort = new AbortController();
      const signal = AbortSignal.any([abort.signal, this.#stop.signal]);
      const opened = Date.now();
      /** @type {Promise<"rotate">} */
      const rotate = new Promise((resolve) => {
        this.#rotate = () => resolve("rotate");
      });
      const run = this.#consume(signal, () => {
        attempt = 0;
        this.#setState("connected");
      });
      const outcome = await Promise.race([run, rotate]);
      if (this.#isClosed()) return; // closed while we waited
      if (outcome === "rotate") {
        // Token updated: open the next stream now. The server lets it replace this one (which
        // it ends with OK) and this one delivers until then, so no message falls in a gap.
        setTimeout(() => abort.abort(), ROTATE_OVERLAP_MS);
        continue;
      }
      if (outcome === null) {
        // Ended OK (rotated by the server): reopen at once, unless it ends as soon as it opens.
        if (Date.now() - opened > 1000) continue;
      } else {
        if (outcome.code === GrpcCode.UNAUTHENTICATED && (await this.#refresh())) continue;
        if (FATAL_CODES.has(outcome.code)) {
          this.#fail(outcome);
          return;
        }
        this._log("Recv failed, reopening", outcome.message);
        if (this.#state === "connected") this.#setState("reconnecting");
      }
      await sleep(backoff(attempt++), this.#stop.signal);
    }
  }

  /**
   * Read one `Recv` stream to its end: null when it ended OK, else the error.
   * @param {AbortSignal} signal
   * @param {() => void} onOpen
   * @returns {Promise<PulseBeamError | null>}
   */
  async #consume(signal, onOpen) {
    try {
      const stream = this.#client.stream("Recv", "RecvReq", { src: this.info }, "RecvResp", signal, onOpen);
      for await (const resp of stream) this.#onMessage(resp.msg);
      return null;
    } catch (err) {
      return asError(err);
    }
  }

  /** @param {PulseBeamError} error */
  #fail(error) {
    this.error = error;
    this.onerror?.(error);
    this.close();
  }

  /** @param {Record<string, any> | undefined} msg */
  #onMessage(msg) {
    const header = msg?.header;
    const payload = msg?.payload;
    if (!header?.src || !payload || payload.ping) return;
    const { src, dst } = header;
    if (dst && dst.connId !== 0 && dst.connId !== this.info.connId) return; // for an older connection of ours
    if (src.connId === this.info.connId && src.peerId === this.info.peerId) return;
    let session = this.#sessions.get(keyOf(src));
    if (!session) {
      if (payload.bye) return;
      session = this.#newSession(src);
    }
    session._receive(msg);
  }

  /** @param {PeerInfo} other */
  #newSession(other) {
    const session = new Session(this, other, this.#rtcConfig, (msg) => this.#sendWithRetry(msg));
    this.#sessions.set(keyOf(other), session);
    this._log("session", keyOf(other), session.impolite ? "impolite" : "polite");
    if (!session.impolite) session._hello();
    for (const waiter of this.#waiters) {
      if (waiter.groupId === other.groupId && waiter.peerId === other.peerId) waiter.resolve(session);
    }
    this.onsession?.(session);
    return session;
  }

  /** @param {Session} session */
  _sessionClosed(session) {
    if (this.#sessions.get(keyOf(session.other)) === session) this.#sessions.delete(keyOf(session.other));
  }

  /** @param {Session} session */
  _sessionConnected(session) {
    if (!this.#options.disableAnalytics) setTimeout(() => this.#reportAnalytics([session]), 1000);
  }

  /**
   * `Send` one message, retried up to 5 times on non-fatal errors (NOT_FOUND too: the other side
   * may be reopening its stream); on UNAUTHENTICATED the token is refreshed once.
   * @param {Record<string, any>} msg
   */
  async #sendWithRetry(msg) {
    let refreshed = false;
    for (let attempt = 0; ; attempt++) {
      try {
        const bye = Boolean(msg.payload.bye);
        await this.#client.unary("Send", "SendReq", { msg }, "SendResp", this.#stop.signal, bye);
        return;
      } catch (err) {
        const error = asError(err);
        if (this.#state === "closed") throw error;
        if (error.code === GrpcCode.UNAUTHENTICATED && !refreshed && (await this.#refresh())) {
          refreshed = true;
          continue;
        }
        const fatal = FATAL_CODES.has(error.code) && error.code !== GrpcCode.NOT_FOUND;
        if (fatal || attempt + 1 >= SEND_ATTEMPTS) throw error;
        await sleep(backoff(attempt), this.#stop.signal);
      }
    }
  }

  /**
   * Connect to `groupId`/`peerId`: sends `Join` about every second until a session with it
   * forms. Unlike the official SDK, a callee that is not there yet (NOT_FOUND) is waited for;
   * a policy refusal or a bad token rejects.
   * @param {string} groupId
   * @param {string} peerId
   * @param {AbortSignal} [abortSignal]
   * @returns {Promise<Session>}
   */
  async connect(groupId, peerId, abortSignal) {
    checkId(groupId, "groupId");
    checkId(peerId, "peerId");
    if (this.#state === "closed") throw new PulseBeamError(GrpcCode.FAILED_PRECONDITION, "the peer is closed");
    for (const s of this.#sessions.values()) {
      if (s.other.groupId === groupId && s.other.peerId === peerId) return s;
    }
    const done = new AbortController();
    const signal = AbortSignal.any([done.signal, this.#stop.signal, ...(abortSignal ? [abortSignal] : [])]);
    /** @type {Promise<Session>} */
    const formed = new Promise((resolve) => {
      const waiter = { groupId, peerId, resolve: (/** @type {Session} */ s) => { this.#waiters.delete(waiter); resolve(s); } };
      this.#waiters.add(waiter);
      signal.addEventListener("abort", () => this.#waiters.delete(waiter), { once: true });
    });
    const joining = this.#joinLoop(groupId, peerId, signal);
    try {
      return await Promise.race([formed, joining]);
    } finally {
      done.abort();
    }
  }

  /**
   * @param {string} groupId @param {string} peerId @param {AbortSignal} signal
   * @returns {Promise<never>}
   */
  async #joinLoop(groupId, peerId, signal) {
    const dst = { groupId, peerId, connId: 0 };
    let refreshed = false;
    let attempt = 0;
    while (!signal.aborted) {
      const msg = { header: { src: this.info, dst, seqnum: 0, reliable: false }, payload: { join: {} } };
      let wait = JOIN_INTERVAL_MS;
      try {
        await this.#client.unary("Send", "SendReq", { msg }, "SendResp", signal);
        attempt = 0;
      } catch (err) {
        const error = asError(err);
        if (signal.aborted) break;
        if (error.code === GrpcCode.UNAUTHENTICATED && !refreshed && (await this.#refresh())) {
          refreshed = true;
          continue;
        }
        if (FATAL_CODES.has(error.code) && error.code !== GrpcCode.NOT_FOUND) throw error;
        if (error.code !== GrpcCode.NOT_FOUND) wait = backoff(attempt++);
      }
      await sleep(wait, signal);
    }
    if (this.#state === "closed") throw this.error ?? new PulseBeamError(GrpcCode.CANCELLED, "the peer closed");
    throw signal.reason instanceof Error ? signal.reason : new DOMException("connect aborted", "AbortError");
  }

  /** @param {Session[]} [only] */
  async #reportAnalytics(only) {
    if (this.#state === "closed") return;
    const reports = [];
    for (const session of only ?? this.#sessions.values()) {
      const info = await session.getConnectionInfo().catch(() => null);
      if (!info) continue;
      const metric = {
        timestampUs: BigInt(Date.now()) * 1000n,
        iceConnectionType: connectionType(info),
        rttUs: info.rttMs === null ? undefined : Math.round(info.rttMs * 1000),
      };
      reports.push({ tags: { src: this.info, dst: session.other }, metrics: [metric] });
    }
    if (!reports.length) return;
    try {
      await this.#client.unary("AnalyticsReport", "AnalyticsReportReq", { reports }, "AnalyticsReportResp", this.#stop.signal);
    } catch (err) {
      this._log("analytics report failed", err);
    }
  }

  /** Close every session (each says `Bye`) and the receive stream. */
  close() {
    if (this.#state === "closed") return;
    for (const session of [...this.#sessions.values()]) session.close("peer closed");
    this.#state = "closed";
    // Let the Byes go out before the streams are cut.
    setTimeout(() => this.#stop.abort(new PulseBeamError(GrpcCode.CANCELLED, "peer closed")), 500);
    if (this.#refreshTimer) clearTimeout(this.#refreshTimer);
    if (this.#analyticsTimer) clearInterval(this.#analyticsTimer);
    this.onstatechange?.("closed");
  }
}

/** A short name of a payload for debug logs. @param {Record<string, any>} payload */
function describe(payload) {
  const signal = payload.signal;
  if (!signal) return Object.keys(payload).join(",");
  if (signal.sdp) return `sdp ${signal.sdp.kind} gen ${signal.generationCounter}`;
  return `candidates ${signal.iceCandidateBatch?.candidates.length ?? 1} gen ${signal.generationCounter}`;
}

/** @param {ConnectionInfo} info */
function connectionType(info) {
  const relay = info.path === "relay";
  if (info.protocol === "tls") return IceConnectionType.RELAY_TLS;
  if (info.protocol === "tcp") return relay ? IceConnectionType.RELAY_TCP : IceConnectionType.DIRECT_TCP;
  return relay ? IceConnectionType.RELAY_UDP : IceConnectionType.DIRECT_UDP;
}

/** @param {unknown} err @returns {PulseBeamError} */
function asError(err) {
  if (err instanceof PulseBeamError) return err;
  if (err instanceof DOMException && err.name === "TimeoutError") return new PulseBeamError(GrpcCode.DEADLINE_EXCEEDED, err.message);
  if (err instanceof DOMException && err.name === "AbortError") return new PulseBeamError(GrpcCode.CANCELLED, err.message);
  return new PulseBeamError(GrpcCode.UNKNOWN, String(/** @type {Error} */ (err)?.message ?? err));
}

/**
 * Create a peer: reads who we are from the token, calls `Prepare` (retried on transient errors)
 * for the ICE servers, and returns a {@link Peer}; call `peer.start()` to go online.
 * @param {PeerOptions} options
 * @returns {Promise<Peer>}
 */
export async function createPeer(options) {
  let token = options.token;
  readToken(token); // a malformed token fails here, before any network call
  const baseUrl = options.baseUrl ?? new URL("../grpc", import.meta.url).href;
  const client = new SignalingClient(baseUrl, () => token);
  let iceServers;
  let refreshed = false;
  for (let attempt = 0; ; attempt++) {
    try {
      iceServers = await prepare(client, options);
      break;
    } catch (err) {
      const error = asError(err);
      if (error.code === GrpcCode.UNAUTHENTICATED && options.tokenProvider && !refreshed) {
        token = await options.tokenProvider();
        refreshed = true;
        continue;
      }
      if (FATAL_CODES.has(error.code) || attempt + 1 >= SEND_ATTEMPTS) throw error;
      await sleep(backoff(attempt));
    }
  }
  return new Peer(options, client, iceServers, token, (t) => { token = t; });
}

/**
 * `Prepare`: the caller's ICE servers first, then ours (TURN credentials expire with the token).
 * @param {SignalingClient} client
 * @param {PeerOptions} options
 * @returns {Promise<RTCIceServer[]>}
 */
async function prepare(client, options) {
  const prepared = await client.unary("Prepare", "PrepareReq", {}, "PrepareResp");
  return [
    ...(options.iceServers ?? []),
    ...prepared.iceServers.map((/** @type {Record<string, any>} */ s) => ({ urls: s.urls, username: s.username, credential: s.credential })),
  ];
}
