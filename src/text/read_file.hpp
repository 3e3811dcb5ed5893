// Whole-file reads for the text layer's inputs (tokenizer.json, tokenizer_config.json, templates).
#pragma once

#include <filesystem>
#include <string>

#include "mach/error.hpp"

namespace mach::text {

// The file's bytes; not_found when it cannot be opened, io when reading fails. Messages name the path.
Result<std::string> read_file(const std::filesystem::path& path);

}  // namespace mach::text
