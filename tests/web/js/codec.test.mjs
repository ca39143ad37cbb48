// Unit tests of the SDK's pure parts (protobuf codec, gRPC-Web framing, token reading), run by
// tests/web/test_js_units.py with `node --test`.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  FrameParser,
  GrpcCode,
  PulseBeamError,
  SdpKind,
  decodeMessage,
  encodeFrame,
  encodeMessage,
  parseTrailers,
  readToken,
} from "../../../src/pulsebeam/web/pulsebeam-peer.js";

const hex = (bytes) => Buffer.from(bytes).toString("hex");

test("PeerInfo encodes fields in order and skips proto3 defaults", () => {
  assert.equal(hex(encodeMessage("PeerInfo", { groupId: "g", peerId: "p", connId: 300 })), "0a016712017018ac02");
  assert.equal(hex(encodeMessage("PeerInfo", { groupId: "", peerId: "", connId: 0 })), "");
});

test("an empty oneof member (Join) is written as a zero-length field", () => {
  assert.equal(hex(encodeMessage("MessagePayload", { join: {} })), "1200");
  assert.deepEqual(decodeMessage("MessagePayload", Uint8Array.from([0x12, 0x00])), { join: {} });
});

test("optional scalars are written even at their default", () => {
  const bytes = encodeMessage("ICECandidate", { candidate: "", sdpMLineIndex: 0, sdpMid: "" });
  assert.equal(hex(bytes), "10001a00");
  const back = decodeMessage("ICECandidate", bytes);
  assert.equal(back.sdpMLineIndex, 0);
  assert.equal(back.sdpMid, "");
  assert.equal(back.username, undefined);
});

test("sint64 zigzag round trips, including negatives and microsecond timestamps", () => {
  for (const v of [0, 1, -1, 63, -64, 1_764_380_000_000_000, -9_000_000_000]) {
    const back = decodeMessage("AnalyticsMetrics", encodeMessage("AnalyticsMetrics", { timestampUs: v, rttUs: v }));
    assert.equal(back.timestampUs, v);
    assert.equal(back.rttUs, v);
  }
  assert.equal(hex(encodeMessage("AnalyticsMetrics", { timestampUs: -1 })), "0801");
  assert.equal(hex(encodeMessage("AnalyticsMetrics", { timestampUs: 1n })), "0802");
});

test("a full signaling message round trips", () => {
  const msg = {
    header: { src: { groupId: "room", peerId: "alice", connId: 4_000_000_000 }, dst: { groupId: "room", peerId: "bob", connId: 0 }, seqnum: 7, reliable: true },
    payload: { signal: { generationCounter: 2, iceCandidateBatch: { candidates: [{ candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host", sdpMLineIndex: 0, sdpMid: "0", username: "abcd" }] } } },
  };
  const back = decodeMessage("Message", encodeMessage("Message", msg));
  assert.equal(back.header.src.connId, 4_000_000_000);
  assert.equal(back.header.dst.connId, 0);
  assert.equal(back.header.seqnum, 7);
  assert.equal(back.header.reliable, true);
  assert.equal(back.payload.signal.generationCounter, 2);
  assert.equal(back.payload.signal.iceCandidateBatch.candidates[0].username, "abcd");
  assert.equal(back.payload.signal.sdp, undefined);
});

test("the last member of a oneof wins when decoding", () => {
  const sdp = encodeMessage("Signal", { sdp: { kind: SdpKind.OFFER, sdp: "v=0" } });
  const cand = encodeMessage("Signal", { iceCandidate: { candidate: "c" } });
  const both = decodeMessage("Signal", Uint8Array.from([...sdp, ...cand]));
  assert.equal(both.sdp, undefined);
  assert.equal(both.iceCandidate.candidate, "c");
});

test("unknown fields of every wire type are skipped", () => {
  // field 15 varint, field 16 fixed64, field 17 bytes, field 18 fixed32, then peer_id "x"
  const bytes = Uint8Array.from([0x78, 0x96, 0x01, 0x81, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0x8a, 0x01, 0x02, 0xaa, 0xbb, 0x95, 0x01, 1, 2, 3, 4, 0x12, 0x01, 0x78]);
  assert.deepEqual(decodeMessage("PeerInfo", bytes), { groupId: "", peerId: "x", connId: 0 });
});

test("malformed protobuf is refused with a message", () => {
  assert.throws(() => decodeMessage("PeerInfo", Uint8Array.from([0x0a, 0x05, 0x61])), /truncated/);
  assert.throws(() => decodeMessage("PeerInfo", Uint8Array.from([0x18])), /truncated varint/);
  assert.throws(() => decodeMessage("PeerInfo", Uint8Array.from([0x0b])), /wire type 3/);
  assert.throws(() => decodeMessage("PeerInfo", Uint8Array.from([0x08, 0x01])), /groupId has wire type 0/);
  assert.throws(() => decodeMessage("PeerInfo", Uint8Array.from([0x0a, 0x01, 0xff])), TypeError);
  assert.throws(() => encodeMessage("Nope", {}), /unknown message type/);
});

test("frames are reassembled whatever the chunk boundaries", () => {
  const one = encodeFrame(encodeMessage("PeerInfo", { peerId: "alice" }));
  const empty = encodeFrame(new Uint8Array(0));
  const trailers = encodeFrame(new TextEncoder().encode("grpc-status:0\r\ngrpc-message:\r\n"), 0x80);
  const all = Uint8Array.from([...one, ...empty, ...trailers]);
  for (let cut = 0; cut <= all.length; cut++) {
    const parser = new FrameParser();
    const frames = [...parser.push(all.subarray(0, cut)), ...parser.push(all.subarray(cut))];
    assert.equal(frames.length, 3, `cut at ${cut}`);
    assert.equal(decodeMessage("PeerInfo", frames[0].data).peerId, "alice");
    assert.equal(frames[1].data.length, 0);
    assert.equal(frames[2].flag, 0x80);
    assert.equal(parseTrailers(frames[2].data).get("grpc-status"), "0");
  }
});

test("trailer names are case-insensitive and values trimmed", () => {
  const t = parseTrailers(new TextEncoder().encode("Grpc-Status: 7\r\ngrpc-message: not%20allowed\r\n"));
  assert.equal(t.get("grpc-status"), "7");
  assert.equal(t.get("grpc-message"), "not%20allowed");
});

test("readToken reads gid, pid and exp and refuses what is not a token", () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const token = `${b64({ alg: "EdDSA", kid: "kid_0123456789abcdef" })}.${b64({ exp: 1738441174, gid: "default", pid: "peer-83", ap: null })}.sig`;
  assert.deepEqual(readToken(token), { groupId: "default", peerId: "peer-83", expiresAt: 1738441174 });
  for (const bad of ["", "abc", "a.b", "a.!!!.c", `x.${b64({ gid: "g" })}.y`, null]) {
    assert.throws(() => readToken(bad), (err) => err instanceof PulseBeamError && err.code === GrpcCode.UNAUTHENTICATED);
  }
});
