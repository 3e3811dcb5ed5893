// The server through the official `openai` npm client: chat and completions, streaming and not, usage,
// logprobs, n, stop, logit_bias, errors as the SDK's typed errors, auth, disconnect, the stats routes; and, on a
// scripted model, tool calls and reasoning (which a random model cannot produce on demand).
//
// Usage: node openai_client.test.mjs --mach BIN --scripted BIN --model DIR
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { args, loadOpenAI, run, startServer } from "./harness.mjs";

const a = args();
const OpenAI = await loadOpenAI();
const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), "mach-server-test-"));
const common = ["--port", "0", "--max-context", "512", "--max-batch", "4", "--step-tokens", "64"];
const plain = await startServer(a.mach, ["serve", a.model, ...common, "--prefix-cache", "--cache-dir", cacheDir]);
const keyed = await startServer(a.mach, ["serve", a.model, ...common, "--api-key", "s3cret"]);
const SCRIPT = '<think>\nLet me check.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';
const scripted = await startServer(a.scripted, ["--tokenizer-dir", a.model, "--script", SCRIPT]);
const JSON_SCRIPT = '{"city": "Paris", "days": [1, 2.5e1], "ok": true, "note": "caf\u00e9 \\"x\\""}';
const scriptedJson = await startServer(a.scripted, ["--tokenizer-dir", a.model, "--script", JSON_SCRIPT]);

const client = new OpenAI({ baseURL: `${plain.url}/v1`, apiKey: "unused", maxRetries: 0 });
const scriptedClient = new OpenAI({ baseURL: `${scripted.url}/v1`, apiKey: "unused", maxRetries: 0 });
const jsonClient = new OpenAI({ baseURL: `${scriptedJson.url}/v1`, apiKey: "unused", maxRetries: 0 });
const model = path.basename(a.model);
const hello = [{ role: "user", content: "Hello! Write a haiku about GPUs." }];

async function collect(stream) {
  const out = { content: "", reasoning: "", chunks: 0, finish: [], usage: null, toolCalls: [], choices: new Map() };
  for await (const chunk of stream) {
    out.chunks++;
    if (chunk.usage) out.usage = chunk.usage;
    for (const c of chunk.choices ?? []) {
      const d = c.delta ?? {};
      const text = d.content ?? c.text ?? "";
      out.content += c.index === 0 ? text : "";
      out.choices.set(c.index, (out.choices.get(c.index) ?? "") + text);
      if (c.index === 0 && d.reasoning_content) out.reasoning += d.reasoning_content;
      for (const t of d.tool_calls ?? []) out.toolCalls.push(t);
      if (c.finish_reason) out.finish.push([c.index, c.finish_reason]);
    }
  }
  return out;
}

async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, "m"));
  assert.ok(m, `metric ${name} missing from /metrics:\n${text}`);
  return Number(m[1]);
}

const tests = [
  ["models.list names the served model", async () => {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [model]);
    const one = await client.models.retrieve(model);
    assert.equal(one.id, model);
  }],

  ["chat: streaming text equals the non-streaming answer (greedy), usage agrees", async () => {
    const req = { model, messages: hello, max_tokens: 12, temperature: 0 };
    const whole = await client.chat.completions.create(req);
    assert.equal(whole.object, "chat.completion");
    const msg = whole.choices[0].message;
    assert.equal(msg.role, "assistant");
    assert.ok(["length", "stop"].includes(whole.choices[0].finish_reason));
    assert.ok(whole.usage.prompt_tokens > 10, JSON.stringify(whole.usage));
    assert.ok(whole.usage.completion_tokens >= 1 && whole.usage.completion_tokens <= 12);
    assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + whole.usage.completion_tokens);
    const streamed = await collect(await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } }));
    assert.equal(streamed.content, msg.content ?? "");
    assert.equal(streamed.reasoning, msg.reasoning_content ?? "");
    assert.deepEqual(streamed.finish, [[0, whole.choices[0].finish_reason]]);
    assert.equal(streamed.usage.completion_tokens, whole.usage.completion_tokens);
    assert.equal(streamed.usage.prompt_tokens, whole.usage.prompt_tokens);
  }],

  ["completions: streaming equals non-streaming; echo prepends the prompt", async () => {
    const req = { model, prompt: "The capital of France is", max_tokens: 10, temperature: 0 };
    const whole = await client.completions.create(req);
    assert.equal(whole.object, "text_completion");
    const streamed = await collect(await client.completions.create({ ...req, stream: true }));
    assert.equal(streamed.content, whole.choices[0].text);
    const echoed = await client.completions.create({ ...req, echo: true });
    assert.equal(echoed.choices[0].text, req.prompt + whole.choices[0].text);
  }],

  ["n choices with a seed are reproducible; different seeds differ", async () => {
    const req = { model, messages: hello, max_tokens: 8, temperature: 1, n: 3, seed: 7 };
    const first = await client.chat.completions.create(req);
    assert.deepEqual(first.choices.map((c) => c.index), [0, 1, 2]);
    const again = await client.chat.completions.create(req);
    assert.deepEqual(again.choices.map((c) => c.message.content), first.choices.map((c) => c.message.content));
    const other = await client.chat.completions.create({ ...req, seed: 8 });
    assert.notDeepEqual(other.choices.map((c) => c.message.content), first.choices.map((c) => c.message.content));
    const streamed = await collect(await client.chat.completions.create({ ...req, stream: true }));
    assert.deepEqual([0, 1, 2].map((i) => streamed.choices.get(i) ?? ""), first.choices.map((c) => c.message.content ?? ""));
  }],

  ["logprobs: one entry per token, greedy token is the top one, top_logprobs sorted", async () => {
    const r = await client.chat.completions.create({ model, messages: hello, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3 });
    const entries = r.choices[0].logprobs.content;
    assert.equal(entries.length, r.usage.completion_tokens);
    for (const e of entries) {
      assert.ok(e.logprob <= 0);
      assert.equal(e.top_logprobs.length, 3);
      for (let i = 1; i < 3; i++) assert.ok(e.top_logprobs[i - 1].logprob >= e.top_logprobs[i].logprob);
      assert.ok(Math.abs(e.logprob - e.top_logprobs[0].logprob) < 1e-5, JSON.stringify(e));
      assert.ok(Array.isArray(e.bytes));
    }
    const c = await client.completions.create({ model, prompt: "Once upon", max_tokens: 4, temperature: 0, logprobs: 2 });
    const lp = c.choices[0].logprobs;
    assert.equal(lp.tokens.length, c.usage.completion_tokens);
    assert.equal(lp.top_logprobs[0] && Object.keys(lp.top_logprobs[0]).length <= 2, true);
  }],

  ["logit_bias: +100 forces a token, -100 bans one, an id outside the vocabulary is refused", async () => {
    // Printable ASCII is its own byte-level token string, so the tokenizer's vocab maps "Hello" to its id.
    const vocab = JSON.parse(fs.readFileSync(path.join(a.model, "tokenizer.json"), "utf8")).model.vocab;
    const hi = vocab["Hello"];
    assert.ok(Number.isInteger(hi));
    const req = { model, prompt: "The capital of France is", max_tokens: 3, temperature: 0 };
    const forced = await client.completions.create({ ...req, logit_bias: { [hi]: 100 } });
    assert.equal(forced.choices[0].text, "HelloHelloHello");
    const sampled = await client.completions.create({ ...req, temperature: 1, seed: 3, logit_bias: { [hi]: 100 } });
    assert.equal(sampled.choices[0].text, "HelloHelloHello");
    // Ban the greedy answer's first token: the first token changes. Its id from its bytes (chat logprobs give
    // them) through the byte-level alphabet of GPT-2's tokenizer, or from the added tokens.
    const tok = JSON.parse(fs.readFileSync(path.join(a.model, "tokenizer.json"), "utf8"));
    const byteChar = new Map();
    for (let b = 0, n = 0; b < 256; b++) {
      const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      byteChar.set(b, String.fromCodePoint(printable ? b : 256 + n++));
    }
    const idOf = (entry) => vocab[entry.bytes.map((b) => byteChar.get(b)).join("")] ??
      tok.added_tokens.find((t) => t.content === entry.token)?.id;
    const chatReq = { model, messages: hello, max_tokens: 1, temperature: 0, logprobs: true, top_logprobs: 2 };
    const first = (await client.chat.completions.create(chatReq)).choices[0].logprobs.content[0];
    const firstId = idOf(first);
    assert.ok(Number.isInteger(firstId), `no id for ${JSON.stringify(first)}`);
    const banned = (await client.chat.completions.create({ ...chatReq, logit_bias: { [firstId]: -100 } }))
      .choices[0].logprobs.content[0];
    assert.notEqual(idOf(banned), firstId);
    assert.equal(banned.token, first.top_logprobs[1].token);  // the runner-up (logprobs are the raw ones)
    assert.equal(banned.logprob, first.top_logprobs[1].logprob);
    await assert.rejects(client.completions.create({ ...req, logit_bias: { 99999999: 5 } }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === "logit_bias");
    await assert.rejects(client.chat.completions.create({ model, messages: hello, logit_bias: { [hi]: 101 } }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === "logit_bias");
  }],

  ["response_format json_object: a random model's reply stays a JSON object prefix; a closed one parses", async () => {
    const json = { type: "json_object" };
    for (const extra of [{ temperature: 0 }, { temperature: 0.8, top_p: 0.9, seed: 6, n: 2 }]) {
      const r = await client.chat.completions.create({ model, messages: hello, max_tokens: 24, response_format: json, ...extra });
      for (const c of r.choices) {
        const text = c.message.content ?? "";
        assert.ok(text.trimStart().startsWith("{"), JSON.stringify(text));
        if (c.finish_reason === "stop") assert.equal(typeof JSON.parse(text), "object");
        else assert.equal(c.finish_reason, "length");
      }
    }
    const req = { model, messages: hello, max_tokens: 16, temperature: 0, response_format: json };
    const whole = await client.chat.completions.create(req);
    const streamed = await collect(await client.chat.completions.create({ ...req, stream: true }));
    assert.equal(streamed.content, whole.choices[0].message.content);
    const completion = await client.completions.create({ model, prompt: "JSON:", max_tokens: 8, temperature: 0, response_format: json });
    assert.ok(completion.choices[0].text.trimStart().startsWith("{"), completion.choices[0].text);
  }],

  ["scripted: a JSON reply in json_object mode ends where the object closes, and parses", async () => {
    for (const stream of [false, true]) {
      const req = { model: "scripted", messages: hello, max_tokens: 200, response_format: { type: "json_object" } };
      const out = stream ? await collect(await jsonClient.chat.completions.create({ ...req, stream: true }))
        : await jsonClient.chat.completions.create(req);
      const text = stream ? out.content : out.choices[0].message.content;
      const finish = stream ? out.finish[0][1] : out.choices[0].finish_reason;
      assert.equal(text, JSON_SCRIPT);
      assert.equal(finish, "stop");
      assert.deepEqual(JSON.parse(text), { city: "Paris", days: [1, 25], ok: true, note: 'café "x"' });
    }
  }],

  ["errors arrive as the SDK's typed errors", async () => {
    await assert.rejects(client.chat.completions.create({ model: "no-such-model", messages: hello }),
      (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === "model_not_found");
    await assert.rejects(client.chat.completions.create({ model, messages: [{ role: "user", content: "word ".repeat(600) }] }),
      (e) => e instanceof OpenAI.BadRequestError && e.code === "context_length_exceeded");
    await assert.rejects(client.chat.completions.create({ model, messages: hello,
      response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object" } } } }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === "response_format");
    await assert.rejects(client.chat.completions.create({ model, messages: [] }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === "messages");
    await assert.rejects(client.chat.completions.create({ model, messages: hello, temperature: 5 }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === "temperature");
    const bad = await fetch(`${plain.url}/v1/chat/completions`, { method: "POST", body: "{not json", headers: { "content-type": "application/json" } });
    assert.equal(bad.status, 400);
    const body = await bad.json();
    assert.equal(body.error.type, "invalid_request_error");
    assert.equal(body.error.code, "invalid_json");
  }],

  ["auth: a wrong key is refused, the right key works, /health stays open", async () => {
    const wrong = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: "wrong", maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
    const right = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: "s3cret", maxRetries: 0 });
    const r = await right.chat.completions.create({ model, messages: hello, max_tokens: 2 });
    assert.ok(r.choices.length === 1);
    assert.equal((await fetch(`${keyed.url}/health`)).status, 200);
  }],

  ["a client that disconnects mid-stream frees its sequence", async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create({ model, messages: hello, max_tokens: 400, temperature: 1, stream: true },
      { signal: controller.signal });
    let chunks = 0;
    try {
      for await (const _ of stream) {
        if (++chunks === 3) controller.abort();  // the SDK closes the connection; iteration ends or throws
      }
    } catch (e) {
      assert.ok(e instanceof OpenAI.APIUserAbortError || e.name === "AbortError", `unexpected ${e}`);
    }
    assert.ok(chunks >= 3 && chunks < 50, `read ${chunks} chunks`);
    const deadline = Date.now() + 5000;
    while ((await metric(plain.url, "mach_running_sequences")) !== 0) {
      assert.ok(Date.now() < deadline, "the sequence still runs 5 s after its client left");
      await new Promise((r) => setTimeout(r, 50));
    }
    const stats = await (await fetch(`${plain.url}/v1/stats`)).json();
    assert.equal(stats.requests.in_flight, 0);
  }],

  ["warm_prefix caches a system prompt; the next request reports cached tokens", async () => {
    const system = { role: "system", content: "You are a careful assistant. ".repeat(12) };
    const warm = await fetch(`${plain.url}/v1/cache/warm_prefix`, { method: "POST", body: JSON.stringify({ messages: [system] }) });
    assert.equal(warm.status, 200, await warm.clone().text());
    const w = await warm.json();
    assert.equal(w.state, "done");
    assert.ok(w.cached_tokens >= 16, JSON.stringify(w));
    const status = await (await fetch(`${plain.url}/v1/cache/warm_prefix`)).json();
    assert.equal(status.state, "done");
    const r = await client.chat.completions.create({ model, messages: [system, ...hello], max_tokens: 2 });
    assert.ok(r.usage.prompt_tokens_details.cached_tokens >= 16, JSON.stringify(r.usage));
    const cache = await (await fetch(`${plain.url}/v1/cache/stats`)).json();
    assert.equal(cache.prefix_cache.enabled, true);
    assert.ok(cache.prefix_cache.hit_tokens >= 16);
  }],

  ["capabilities, stats and metrics describe the server", async () => {
    const caps = await (await fetch(`${plain.url}/v1/capabilities`)).json();
    assert.equal(caps.model.id, model);
    assert.equal(caps.model.model_type, "qwen3_moe");
    assert.equal(caps.arch.family, "qwen3_moe");
    assert.equal(caps.serving.residency, "resident");
    assert.deepEqual(caps.grammar.supported, ["json_object"]);
    const stats = await (await fetch(`${plain.url}/v1/stats`)).json();
    assert.ok(stats.choices.finished > 0);
    assert.ok(stats.time_to_first_token_ms.samples > 0);
    assert.ok(stats.steps.decode > 0);
    const text = await (await fetch(`${plain.url}/metrics`)).text();
    for (const name of ["mach_requests_started_total", "mach_time_to_first_token_seconds_count", "mach_queue_depth", "mach_http_responses_total"])
      assert.ok(text.includes(`\n${name}`) || text.startsWith(name) || text.includes(`# TYPE ${name}`), `${name} missing`);
  }],

  ["scripted: tool calls and reasoning, non-streaming", async () => {
    const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];
    const r = await scriptedClient.chat.completions.create({ model: "scripted", messages: hello, tools, max_tokens: 100 });
    const c = r.choices[0];
    assert.equal(c.finish_reason, "tool_calls");
    assert.equal(c.message.reasoning_content.trim(), "Let me check.");
    assert.equal(c.message.tool_calls.length, 1);
    assert.equal(c.message.tool_calls[0].type, "function");
    assert.equal(c.message.tool_calls[0].function.name, "get_weather");
    assert.deepEqual(JSON.parse(c.message.tool_calls[0].function.arguments), { city: "Paris" });
    assert.ok(!c.message.content || c.message.content.trim() === "");
    // The round trip: the call and its result go back as history.
    const next = await scriptedClient.chat.completions.create({ model: "scripted", tools, max_tokens: 5, messages: [
      ...hello, c.message, { role: "tool", tool_call_id: c.message.tool_calls[0].id, content: "{\"temperature\": 18}" }] });
    assert.ok(next.usage.prompt_tokens > r.usage.prompt_tokens);
  }],

  ["scripted: tool calls and reasoning, streaming", async () => {
    const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }];
    const s = await collect(await scriptedClient.chat.completions.create({ model: "scripted", messages: hello, tools, max_tokens: 100, stream: true }));
    assert.deepEqual(s.finish, [[0, "tool_calls"]]);
    assert.equal(s.reasoning.trim(), "Let me check.");
    assert.equal(s.toolCalls.length, 1);
    assert.equal(s.toolCalls[0].index, 0);
    assert.equal(s.toolCalls[0].function.name, "get_weather");
    assert.deepEqual(JSON.parse(s.toolCalls[0].function.arguments), { city: "Paris" });
  }],

  ["scripted: a stop string ends the answer where it starts", async () => {
    const r = await scriptedClient.chat.completions.create({ model: "scripted", messages: hello, max_tokens: 100, stop: ["check"] });
    assert.equal(r.choices[0].finish_reason, "stop");
    assert.equal(r.choices[0].message.reasoning_content.trim(), "Let me");
    assert.equal(r.choices[0].message.tool_calls, undefined);
    const s = await collect(await scriptedClient.chat.completions.create({ model: "scripted", messages: hello, max_tokens: 100, stop: ["check"], stream: true }));
    assert.equal(s.reasoning.trim(), "Let me");
    assert.deepEqual(s.finish, [[0, "stop"]]);
  }],
];

await run(tests, [plain, keyed, scripted, scriptedJson]);
fs.rmSync(cacheDir, { recursive: true, force: true });
