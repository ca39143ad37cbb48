// Line protocol for tests/web/test_codec_interop.py: each stdin line is a JSON request
// {"op": "encode", "type": T, "value": {...}} or {"op": "decode", "type": T, "hex": "..."};
// each stdout line is {"hex": "..."} or {"value": {...}} or {"error": "..."}.
import { createInterface } from "node:readline";

import { decodeMessage, encodeMessage } from "../../../src/pulsebeam/web/pulsebeam-peer.js";

for await (const line of createInterface({ input: process.stdin })) {
  let reply;
  try {
    const request = JSON.parse(line);
    if (request.op === "encode") {
      reply = { hex: Buffer.from(encodeMessage(request.type, request.value)).toString("hex") };
    } else {
      reply = { value: decodeMessage(request.type, Uint8Array.from(Buffer.from(request.hex, "hex"))) };
    }
  } catch (err) {
    reply = { error: String(err.message) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
}
