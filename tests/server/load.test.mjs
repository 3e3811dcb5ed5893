// Load test, loopback only and bounded: N concurrent streaming clients against `mach serve` on the tiny
// chat model. Every stream must complete with [DONE] and a finish reason, no request may fail, and the
// server's memory must stay stable: the resident set after a second identical wave may not grow by more
// than a margin over the first (a leak per request would show as growth per wave).
//
// Usage: node load.test.mjs --mach BIN --model DIR [--clients 64] [--tokens 12]
// Greedy decoding keeps the CPU-side sampling of lavapipe runs cheap; the server's work is the same.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { args, run, startServer } from "./harness.mjs";

const a = args();
const clients = Number(a.clients ?? 64);
const tokens = Number(a.tokens ?? 12);
const server = await startServer(a.mach, ["serve", a.model, "--port", "0", "--max-context", "256", "--max-batch", "32",
  "--step-tokens", "128", "--rate-limit", "1000"]);
const model = path.basename(a.model);

function rssKiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(status.match(/VmRSS:\s+(\d+)/)[1]);
}

// One streaming chat completion over raw fetch: returns the SSE events' data payloads.
async function streamOnce(i) {
  const res = await fetch(`${server.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, stream: true, max_tokens: tokens, temperature: 0, seed: i,
      messages: [{ role: "user", content: `Client ${i}: tell me something.` }] }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  assert.match(res.headers.get("content-type"), /^text\/event-stream/);
  const text = await res.text();
  assert.ok(text.endsWith("data: [DONE]\n\n"), `stream ${i} did not end with [DONE]: ${text.slice(-200)}`);
  const events = text.split("\n\n").filter((e) => e.length).map((e) => e.replace(/^data: /, ""));
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  for (const c of chunks) assert.ok(!c.error, `stream ${i} failed: ${JSON.stringify(c.error)}`);
  const finishes = chunks.flatMap((c) => c.choices).filter((c) => c.finish_reason);
  assert.equal(finishes.length, 1, `stream ${i}: ${JSON.stringify(finishes)}`);
  assert.ok(["length", "stop"].includes(finishes[0].finish_reason));
}

async function wave() {
  const t0 = Date.now();
  const results = await Promise.allSettled(Array.from({ length: clients }, (_, i) => streamOnce(i)));
  const failed = results.filter((r) => r.status === "rejected");
  assert.equal(failed.length, 0, failed.map((f) => f.reason?.stack ?? f.reason).slice(0, 3).join("\n"));
  return Date.now() - t0;
}

await run([
  [`${clients} concurrent streaming clients, two waves, memory stable`, async () => {
    const warm = await wave();  // allocator pools, pipelines and caches settle in the first wave
    const after1 = rssKiB(server.proc.pid);
    const second = await wave();
    const after2 = rssKiB(server.proc.pid);
    const third = await wave();
    const after3 = rssKiB(server.proc.pid);
    console.log(JSON.stringify({ clients, tokens, wave_ms: [warm, second, third], rss_kib: [after1, after2, after3] }));
    // A per-request leak of even 16 KiB would add 1 MiB per wave of 64; allow 8 MiB of allocator noise.
    assert.ok(after3 - after1 < 8 * 1024, `RSS grew from ${after1} KiB to ${after3} KiB over two waves`);
    const stats = await (await fetch(`${server.url}/v1/stats`)).json();
    assert.equal(stats.requests.in_flight, 0);
    assert.equal(stats.queue.running, 0);
    assert.equal(stats.choices.finished, 3 * clients);
    assert.ok(stats.steps.mean_decode_batch > 1, "no two sequences ever shared a decode step");
  }],
], [server]);
