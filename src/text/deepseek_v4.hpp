// DeepSeek-V4 prompts, rendered by our own formatter: the checkpoints ship a Python encoder
// (encoding/encoding_dsv4.py, encode_messages) instead of a Jinja chat template. This reproduces that encoder
// byte for byte (tests/deepseek_v4_test.cpp runs the published file as the oracle):
//   <｜begin▁of▁sentence｜>SYSTEM[\n\n## Tools ... tool schemas as JSON lines]<｜User｜>USER<｜Assistant｜><think> or </think>
//   REASONING</think>CONTENT\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="F">\n<｜DSML｜parameter name="K"
//   string="true|false">V</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>
// Tool results become <tool_result>…</tool_result> blocks of a user turn (ordered as the calls were), reasoning
// of turns before the last user message is dropped in thinking mode unless tools are present, and the prompt
// opens the assistant turn after the last user message on its own (add_generation_prompt changes nothing).
//
// How a chat request maps onto encode_messages (what a server does; the oracle script does the same):
//   - request.tools go on the first message when it is a system message, else on a system message put first;
//   - message content given as OpenAI parts becomes the concatenation of its text parts;
//   - kwargs: "thinking" or "enable_thinking" (bool) → thinking_mode "thinking" (default "chat"),
//     "thinking_mode" ("chat" | "thinking") directly, "reasoning_effort" (null | "high" | "max"),
//     "drop_thinking" (bool, default true), "add_default_bos_token" (bool, default true).
// Message fields the encoder knows pass through: reasoning_content, tool_calls, tool_call_id, response_format,
// wo_eos, task, and the roles system, developer, user, assistant, tool, latest_reminder.
#pragma once

#include <string>

#include "mach/error.hpp"
#include "text/chat_template.hpp"

namespace mach::text {

Result<std::string> render_deepseek_v4(const ChatRequest& request);

}  // namespace mach::text
