#!/usr/bin/env python3
"""Golden fixtures for mach: tiny random-weight checkpoints of every model family, saved by transformers.

For each family this builds a tiny config with the family's real transformers config class, initializes
random weights from a fixed seed (norm weights spread away from their neutral value so that a wrong norm
shows), saves the model in bf16 with save_pretrained into OUT/<model_type>/, reloads the saved bf16 weights
as float32 and records, on the CPU with eager attention:

  logits.npy       float32 [T, vocab]: logits of every position of a seeded random prompt
  reference.json   prompt ids, a 12-token greedy continuation computed by full recompute each step (no KV
                   cache), the margins of each greedy step, versions, dtype notes and the tensor layout

Needs python3 with torch and transformers 5.x (the GPU machine); no internet. Usage:

  python3 tools/make_fixtures.py --out tests/fixtures [--only qwen3_moe] [--only gpt_oss]

Each family runs in its own try/except: a failing family prints its traceback and the rest continue; the
exit status is non-zero if any failed.
"""

import argparse
import json
import os
import shutil
import sys
import traceback

PROMPT_LEN = 7
CONTINUATION = 12
# Prompts tried per family; the one whose smallest top-1/top-2 logit gap (over prompt positions and greedy
# steps, relative to max |logit|) is largest wins, so that quantized weights (q8_0) can still be held to the
# same greedy tokens. Candidates whose continuation repeats itself (fewer than MIN_DISTINCT distinct tokens)
# test little and are taken only when no other candidate is left.
PROMPT_CANDIDATES = 24
MIN_DISTINCT = 6
MAX_FIXTURE_BYTES = 2 * 1024 * 1024
BASE_SEED = 20251122


def family_specs():
    """name -> (list of (config class, model class) name pairs to try, config kwargs, notes).

    When transformers added the classes: Qwen3Moe in 4.51, GptOss in 4.55, then in the 5.x series Qwen3_5Moe
    (2026-02-09), Gemma4 (2026-04-01) and DeepseekV4 (2026-05-02); all are in 5.17. The first pair whose
    classes exist is used; a family with none fails with a message saying this transformers lacks it.
    """
    common = dict(vocab_size=512, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                  max_position_embeddings=256, tie_word_embeddings=False)
    specs = {}
    specs["qwen3_moe"] = (
        [("Qwen3MoeConfig", "Qwen3MoeForCausalLM")],
        dict(common, num_hidden_layers=3, head_dim=16, intermediate_size=128, moe_intermediate_size=32,
             num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, bos_token_id=1, eos_token_id=2),
        "per-head q/k RMSNorm, neox RoPE, softmax -> top-2 -> renormalized router",
    )
    specs["qwen3_5_moe"] = (
        [("Qwen3_5MoeTextConfig", "Qwen3_5MoeForCausalLM")],
        dict(common, num_hidden_layers=4, head_dim=32, moe_intermediate_size=32, shared_expert_intermediate_size=48,
             num_experts=8, num_experts_per_tok=2,
             layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
             linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
             linear_num_value_heads=4,
             rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                              "mrope_section": [2, 1, 1], "mrope_interleaved": True},
             bos_token_id=1, eos_token_id=2),
        "text-only Qwen3_5MoeForCausalLM (model_type qwen3_5_moe_text, weights under model.*); 3 Gated DeltaNet "
        "layers + 1 gated full-attention layer; (1+w) RMSNorm; partial RoPE 0.25 (8 of 32 dims)",
    )
    specs["gpt_oss"] = (
        [("GptOssConfig", "GptOssForCausalLM")],
        dict(common, num_hidden_layers=2, head_dim=16, intermediate_size=32, num_local_experts=8,
             num_experts_per_tok=2, sliding_window=4, layer_types=["sliding_attention", "full_attention"],
             max_position_embeddings=131072,
             rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
                              "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096},
             bos_token_id=1, eos_token_id=2),
        "sinks; sliding window 4 on layer 0 (shorter than prompt + continuation); YaRN; router bias; clamped "
        "SwiGLU with interleaved gate/up; experts saved as bf16 (no MXFP4)",
    )
    specs["gemma4"] = (
        [("Gemma4TextConfig", "Gemma4ForCausalLM")],
        dict(common, num_hidden_layers=3, head_dim=16, global_head_dim=32, num_global_key_value_heads=1,
             attention_k_eq_v=True, intermediate_size=64, enable_moe_block=True, num_experts=8, top_k_experts=2,
             moe_intermediate_size=32, sliding_window=4,
             layer_types=["sliding_attention", "sliding_attention", "full_attention"],
             final_logit_softcapping=30.0, hidden_size_per_layer_input=0, vocab_size_per_layer_input=512,
             num_kv_shared_layers=0, tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1,
             rope_parameters={
                 "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                 "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                    "rope_theta": 1000000.0}}),
        "text-only Gemma4ForCausalLM (model_type gemma4_text); dense GeGLU MLP + MoE per layer; sliding window 4; "
        "full layer with head_dim 32, 1 kv head, k=v; proportional RoPE; softcap 30; tied embeddings",
    )
    specs["deepseek_v4"] = (
        [("DeepseekV4Config", "DeepseekV4ForCausalLM")],
        dict(common, num_hidden_layers=4, num_key_value_heads=1, head_dim=32, q_lora_rank=32, o_groups=2,
             o_lora_rank=16, moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2,
             n_shared_experts=1, scoring_func="sqrtsoftplus", norm_topk_prob=True, routed_scaling_factor=1.5,
             partial_rotary_factor=0.25, rope_theta=10000.0, compress_rope_theta=160000.0,
             layer_types=["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention",
                          "compressed_sparse_attention"],
             compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
             mlp_layer_types=["hash_moe", "moe", "moe", "moe"], hc_mult=4, hc_sinkhorn_iters=20, hc_eps=1e-6,
             swiglu_limit=10.0, sliding_window=4, index_n_heads=2, index_head_dim=16, index_topk=2,
             num_nextn_predict_layers=0, bos_token_id=0, eos_token_id=1),
        "hyper-connections (4 streams, Sinkhorn), one shared K=V head of 32, CSA (rate 4) and HCA (rate 8) "
        "compressed layers + sliding window 4, hash-routed layer 0, sqrt-softplus router with bias; no YaRN, "
        "no MTP layer, bf16 instead of FP8/FP4",
    )
    return specs


def log(msg):
    print(msg, flush=True)


def resolve_classes(transformers, candidates):
    for cfg_name, model_name in candidates:
        cfg_cls = getattr(transformers, cfg_name, None)
        model_cls = getattr(transformers, model_name, None)
        if cfg_cls is not None and model_cls is not None:
            return cfg_cls, model_cls, model_name
    names = ", ".join(f"{a}/{b}" for a, b in candidates)
    raise RuntimeError(f"transformers {transformers.__version__} has none of {names}: this family does not exist "
                       f"in this transformers version under any known name")


def build_model(torch, cfg, model_cls):
    """A float32 model with eager attention (the plainest math) built from cfg."""
    try:
        model = model_cls._from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    except TypeError:
        model = model_cls._from_config(cfg, attn_implementation="eager", torch_dtype=torch.float32)
    return model.float().eval()


def randomize(torch, model, hidden, seed):
    """Deterministic random weights that make every part of the model matter.

    Matrices ~ N(0, 1/hidden); norm weights spread away from their neutral value (w ~ 1 + 0.5 N for w-norms,
    w ~ 0.5 N for (1+w)-norms whose neutral value is 0); other vectors (biases, sinks, scales) get noise;
    A_log (Gated DeltaNet decay) keeps its init; integer tables (deepseek_v4 tid2eid) get random distinct
    experts per token.
    """
    gen = torch.Generator().manual_seed(seed)
    std = hidden ** -0.5
    seen = set()
    with torch.no_grad():
        # keep_vars: the parameters and persistent buffers themselves; tied weights appear once per name.
        for name, t in model.state_dict(keep_vars=True).items():
            if id(t) in seen:
                continue
            seen.add(id(t))
            leaf = name.split(".")[-1]
            if not t.is_floating_point():
                if leaf == "tid2eid":
                    num_experts = int(model.config.n_routed_experts)
                    rows = [torch.randperm(num_experts, generator=gen)[: t.shape[-1]] for _ in range(t.shape[0])]
                    t.copy_(torch.stack(rows).to(t.dtype))
                continue
            if "A_log" in name or t.dim() == 0:
                continue
            noise = lambda scale: torch.randn(t.shape, generator=gen) * scale
            if t.dim() >= 2:
                t.copy_(noise(std))
            elif "norm" in name:
                neutral_one = bool(torch.all(t == 1.0))
                t.copy_(1.0 + noise(0.5) if neutral_one else noise(0.5))
            elif torch.all(t == 1.0):
                t.copy_(1.0 + noise(0.2))
            else:
                t.copy_(noise(0.5))


def all_finite(torch, model, ids):
    with torch.no_grad():
        out = model(input_ids=ids[None], use_cache=False).logits
    return bool(torch.isfinite(out).all())


def save_bf16(torch, model, out_dir):
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    model = model.to(torch.bfloat16)
    try:
        model.save_pretrained(out_dir, safe_serialization=True)
    except TypeError:
        model.save_pretrained(out_dir)
    model.float()


def load_f32(torch, model_cls, out_dir):
    kwargs = dict(attn_implementation="eager", output_loading_info=True)
    try:
        model, info = model_cls.from_pretrained(out_dir, dtype=torch.float32, **kwargs)
    except TypeError:
        model, info = model_cls.from_pretrained(out_dir, torch_dtype=torch.float32, **kwargs)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise RuntimeError(f"reloading {out_dir} did not round-trip: {bad}")
    return model.float().eval()


def check_reload(torch, original, reloaded):
    """The reloaded float32 weights must be exactly the bf16-rounded originals."""
    want = original.state_dict()
    got = reloaded.state_dict()
    for name, w in want.items():
        if name not in got:
            raise RuntimeError(f"reloaded model lacks {name}")
        expect = w.to(torch.bfloat16).to(w.dtype) if w.is_floating_point() else w
        if got[name].shape != expect.shape or not torch.equal(got[name].to(expect.dtype), expect):
            raise RuntimeError(f"reloaded {name} differs from the saved bf16 weights")


def reference_outputs(torch, model, prompt):
    """Logits [T, V] of the prompt, a greedy continuation by full recompute (no KV cache) and the top-1/top-2
    logit gaps of every greedy step."""
    with torch.no_grad():
        logits = model(input_ids=prompt[None], use_cache=False).logits[0].float()
        ids = prompt.clone()
        continuation, margins = [], []
        for _ in range(CONTINUATION):
            last = model(input_ids=ids[None], use_cache=False).logits[0, -1].float()
            top2 = torch.topk(last, 2)
            nxt = int(top2.indices[0])
            continuation.append(nxt)
            margins.append(float(top2.values[0] - top2.values[1]))
            ids = torch.cat([ids, torch.tensor([nxt], dtype=ids.dtype)])
    if int(torch.argmax(logits[-1])) != continuation[0]:
        raise RuntimeError("the prompt's last-position argmax differs from the first greedy token")
    return logits, continuation, margins


def top2_gaps(torch, logits):
    top2 = torch.topk(logits, 2, dim=-1).values
    return [float(x) for x in (top2[:, 0] - top2[:, 1])]


def pick_prompt(torch, model, vocab, seed):
    """The seeded candidate prompt with the largest smallest relative top-1/top-2 gap."""
    best = None
    for k in range(PROMPT_CANDIDATES):
        prompt = torch.randint(3, vocab, (PROMPT_LEN,), generator=torch.Generator().manual_seed(seed + 1 + k))
        logits, continuation, margins = reference_outputs(torch, model, prompt)
        score = min(top2_gaps(torch, logits) + margins) / float(logits.abs().max())
        key = (len(set(continuation)) >= MIN_DISTINCT, score)
        if best is None or key > best[0]:
            best = (key, score, prompt, logits, continuation, margins, k)
    return best[1:]


def safetensors_layout(out_dir):
    from safetensors import safe_open
    layout = {}
    for fname in sorted(os.listdir(out_dir)):
        if fname.endswith(".safetensors"):
            with safe_open(os.path.join(out_dir, fname), framework="pt") as f:
                for key in f.keys():
                    sl = f.get_slice(key)
                    layout[key] = {"shape": list(sl.get_shape()), "dtype": sl.get_dtype(), "file": fname}
    return layout


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def write_reference(out_dir, record, logits):
    import numpy as np
    np.save(os.path.join(out_dir, "logits.npy"), logits.numpy().astype(np.float32))
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")


def expert_layout_of(layout):
    if any(".mlp.experts.gate_up_proj" in k for k in layout):
        return "fused"
    if any(".mlp.experts.0.gate_proj.weight" in k for k in layout):
        return "per_expert"
    return "other"


def make_family(torch, transformers, name, spec, out_root, seed):
    candidates, kwargs, notes = spec
    cfg_cls, model_cls, model_cls_name = resolve_classes(transformers, candidates)
    log(f"[{name}] {cfg_cls.__name__} + {model_cls_name}")
    torch.manual_seed(seed)
    cfg = cfg_cls(**kwargs)
    model = build_model(torch, cfg, model_cls)
    probe = torch.randint(3, cfg.vocab_size, (PROMPT_LEN,), generator=torch.Generator().manual_seed(seed + 1))
    randomize(torch, model, cfg.hidden_size, seed)
    init_note = "random N(0, 1/hidden) matrices, norms spread away from neutral"
    if not all_finite(torch, model, probe):
        log(f"[{name}] non-finite logits with spread weights; falling back to transformers' own init")
        torch.manual_seed(seed)
        model = build_model(torch, cfg, model_cls)
        init_note = "transformers' own init (spread init gave non-finite logits)"

    out_dir = os.path.join(out_root, name)
    save_bf16(torch, model, out_dir)
    ref_model = load_f32(torch, model_cls, out_dir)
    check_reload(torch, model, ref_model)
    score, prompt, logits, continuation, margins, candidate = pick_prompt(torch, ref_model, cfg.vocab_size, seed)
    layout = safetensors_layout(out_dir)
    with open(os.path.join(out_dir, "config.json")) as f:
        saved_model_type = json.load(f).get("model_type")
    record = {
        "family": name,
        "model_type": saved_model_type,
        "model_class": model_cls_name,
        "config_class": cfg_cls.__name__,
        "prompt_ids": [int(x) for x in prompt],
        "continuation_ids": continuation,
        "greedy_margins": margins,
        "prompt_margins": top2_gaps(torch, logits),
        "prompt_selection": f"candidate {candidate} of {PROMPT_CANDIDATES} seeded prompts (seed + 1 + k), chosen for "
                            f"at least {MIN_DISTINCT} distinct continuation tokens, then the largest min top-1/top-2 logit gap relative to max |logit| ({score:.4f})",
        "max_abs_logit": float(logits.abs().max()),
        "logits_file": "logits.npy",
        "logits_shape": list(logits.shape),
        "seed": seed,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "dtype_notes": "weights saved as bf16 by save_pretrained; references computed on the CPU in float32 from "
                       "the reloaded bf16 weights, eager attention; the continuation recomputes the whole sequence "
                       "each step (use_cache=False)",
        "init": init_note,
        "notes": notes,
        "expert_layout": expert_layout_of(layout),
        "tensors": layout,
    }
    write_reference(out_dir, record, logits)
    size = dir_bytes(out_dir)
    log(f"[{name}] saved {out_dir}: {size} bytes, model_type={saved_model_type}, layout={record['expert_layout']}, "
        f"continuation={continuation}, min relative gap={score:.4f}")
    if size > MAX_FIXTURE_BYTES:
        raise RuntimeError(f"{out_dir} is {size} bytes, over the {MAX_FIXTURE_BYTES}-byte budget")
    return out_dir, record, logits, model_cls


def qwen3_moe_other_layout(torch, transformers, base_dir, record, logits, model_cls, out_root):
    """A second qwen3_moe fixture with the other expert layout: fused `mlp.experts.gate_up_proj` [E, 2I, H] and
    `mlp.experts.down_proj` [E, H, I] when transformers saved per-expert tensors, per-expert tensors when it saved
    fused ones. transformers must load it to the same logits."""
    import re
    from safetensors.torch import load_file, save_file
    native = record["expert_layout"]
    if native not in ("per_expert", "fused"):
        raise RuntimeError(f"unexpected qwen3_moe expert layout in {base_dir}")
    shards = [f for f in os.listdir(base_dir) if f.endswith(".safetensors")]
    if len(shards) != 1:
        raise RuntimeError(f"expected one safetensors file in {base_dir}, found {shards}")
    tensors = load_file(os.path.join(base_dir, shards[0]))
    expert_ids = [int(m.group(1)) for k in tensors for m in [re.search(r"\.mlp\.experts\.(\d+)\.", k)] if m]
    num_experts = max(expert_ids) + 1 if expert_ids else 0
    out = {}
    if native == "per_expert":
        variant = "fused"
        layers = sorted({int(re.search(r"layers\.(\d+)\.", k).group(1)) for k in tensors if ".mlp.experts." in k})
        for k, v in tensors.items():
            if ".mlp.experts." not in k:
                out[k] = v
        for layer in layers:
            p = f"model.layers.{layer}.mlp.experts"
            gate_up = [torch.cat([tensors[f"{p}.{e}.gate_proj.weight"], tensors[f"{p}.{e}.up_proj.weight"]], dim=0)
                       for e in range(num_experts)]
            out[f"{p}.gate_up_proj"] = torch.stack(gate_up).contiguous()
            out[f"{p}.down_proj"] = torch.stack([tensors[f"{p}.{e}.down_proj.weight"]
                                                 for e in range(num_experts)]).contiguous()
    else:
        variant = "per_expert"
        for k, v in tensors.items():
            m = re.match(r"(.*\.mlp\.experts)\.(gate_up_proj|down_proj)$", k)
            if not m:
                out[k] = v
                continue
            for e in range(v.shape[0]):
                if m.group(2) == "gate_up_proj":
                    inter = v.shape[1] // 2
                    out[f"{m.group(1)}.{e}.gate_proj.weight"] = v[e, :inter].contiguous()
                    out[f"{m.group(1)}.{e}.up_proj.weight"] = v[e, inter:].contiguous()
                else:
                    out[f"{m.group(1)}.{e}.down_proj.weight"] = v[e].contiguous()
    name = f"qwen3_moe_{variant}"
    out_dir = os.path.join(out_root, name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    for f in os.listdir(base_dir):
        if f.endswith(".json") and f != "reference.json" and not f.endswith(".index.json"):
            shutil.copy(os.path.join(base_dir, f), out_dir)
    save_file(out, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    model = load_f32(torch, model_cls, out_dir)
    prompt = torch.tensor(record["prompt_ids"])
    got_logits, continuation, margins = reference_outputs(torch, model, prompt)
    diff = float((got_logits - logits).abs().max())
    if diff != 0.0 or continuation != record["continuation_ids"]:
        raise RuntimeError(f"{name}: transformers loads it to different outputs (max |dlogits| = {diff})")
    layout = safetensors_layout(out_dir)
    variant_record = dict(record, family="qwen3_moe", expert_layout=expert_layout_of(layout), tensors=layout,
                          notes=record["notes"] + f"; same weights as qwen3_moe/ rewritten in the {variant} expert "
                                                  f"layout (transformers saves {native}); transformers loads both "
                                                  f"to identical logits")
    write_reference(out_dir, variant_record, logits)
    log(f"[{name}] saved {out_dir}: {dir_bytes(out_dir)} bytes, identical logits to qwen3_moe/")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder, e.g. tests/fixtures")
    parser.add_argument("--only", action="append", default=[], help="a family to make (repeatable)")
    args = parser.parse_args()

    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
        import torch
        import transformers
    except ImportError as e:
        print(f"make_fixtures: needs torch, transformers 5.x, numpy and safetensors: {e}", file=sys.stderr)
        return 2
    torch.set_grad_enabled(False)
    if hasattr(torch.backends, "cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
    log(f"transformers {transformers.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}")
    if int(transformers.__version__.split(".")[0]) < 5:
        log("warning: these fixtures are meant to be made with transformers 5.x")

    specs = family_specs()
    unknown = [n for n in args.only if n not in specs]
    if unknown:
        print(f"make_fixtures: unknown family {unknown}; known: {', '.join(specs)}", file=sys.stderr)
        return 2
    names = args.only or list(specs)
    os.makedirs(args.out, exist_ok=True)
    results = {}
    for name in names:
        seed = BASE_SEED + 1000 * list(specs).index(name)
        try:
            base_dir, record, logits, model_cls = make_family(torch, transformers, name, specs[name], args.out, seed)
            if name == "qwen3_moe":
                qwen3_moe_other_layout(torch, transformers, base_dir, record, logits, model_cls, args.out)
            results[name] = "ok"
        except Exception as e:  # one family's failure must not stop the others
            traceback.print_exc()
            results[name] = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    log("\nsummary:")
    for name in names:
        log(f"  {name:<12} {results[name]}")
    return 0 if all(v == "ok" for v in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
