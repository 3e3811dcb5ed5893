// libFuzzer target for reasoning/tool-call parsing: arbitrary model output in arbitrary pieces.
// Invariants: no crash; streaming in the pieces the input picks gives the same message as parsing whole.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "text/output_parser.hpp"

using namespace mach::text;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const auto format = static_cast<OutputFormat>(data[0] % kOutputFormatCount);
  const bool starts_in_reasoning = (data[1] & 1) != 0;
  const size_t step = 1 + (data[1] >> 1) % 13;
  const std::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);
  const OutputDelta whole = parse_output(format, text, nullptr, starts_in_reasoning);
  OutputParser parser(format, nullptr, starts_in_reasoning);
  OutputDelta pieces;
  for (size_t i = 0; i < text.size(); i += step) pieces.append(parser.push(text.substr(i, step)));
  pieces.append(parser.finish());
  if (pieces.content != whole.content || pieces.reasoning != whole.reasoning || !(pieces.tool_calls == whole.tool_calls)) {
    std::abort();
  }
  return 0;
}
