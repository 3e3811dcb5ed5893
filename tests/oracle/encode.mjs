// Reference token ids from transformers.js (@lenml/tokenizers) for mach's tokenizer tests.
// Usage: node encode.mjs OUT.json
//   OUT.json: {"lines": [...corpus.mjs...], "<tokenizer>": {"dir", "ids", "decoded", "with_special"}} with the
//   ids of every line (add_special_tokens false, as chat prompts are encoded), their decode, and the ids of
//   the first line with add_special_tokens true.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildCorpus } from "./corpus.mjs";

const here = dirname(fileURLToPath(import.meta.url));
if (!existsSync(join(here, "node_modules", "@lenml", "tokenizers"))) {
  console.error(`tokenizer oracle: ${join(here, "node_modules")} is missing; run scripts/setup.sh ` +
                `(it runs 'npm ci' in tests/oracle)`);
  process.exit(1);
}
const { TokenizerLoader } = await import("@lenml/tokenizers");
const require = createRequire(import.meta.url);
const TOKENIZERS = ["qwen3", "gptoss", "gemma3", "deepseek_v3"];

function modelDir(name) {
  return require.resolve(`@lenml/tokenizer-${name}/models/tokenizer.json`).replace(/\/tokenizer\.json$/, "");
}

function load(name) {
  const dir = modelDir(name);
  return TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(readFileSync(`${dir}/tokenizer.json`, "utf8")),
    tokenizerConfig: JSON.parse(readFileSync(`${dir}/tokenizer_config.json`, "utf8")),
  });
}

const [outPath] = process.argv.slice(2);
if (!outPath) {
  console.error("usage: node encode.mjs OUT.json");
  process.exit(2);
}
const lines = buildCorpus();
const out = { lines };
for (const name of TOKENIZERS) {
  const tok = load(name);
  const ids = lines.map((line) => tok.encode(line, { add_special_tokens: false }));
  out[name] = {
    dir: modelDir(name),
    ids,
    decoded: ids.map((x) => (x.length ? tok.decode(x, { skip_special_tokens: false }) : "")),
    with_special: tok.encode(lines[0], { add_special_tokens: true }),
  };
}
writeFileSync(outPath, JSON.stringify(out));
