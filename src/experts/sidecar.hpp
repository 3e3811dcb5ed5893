// The expert sidecar: routed experts of an engine-layout checkpoint, packed for streaming.
//
//   DIR/expert_sidecar/layout.json   what follows, validated by Sidecar::open
//   DIR/expert_sidecar/layer_NN.bin  one file per MoE layer (NN = layer number, at least two digits)
//
// Each expert is one contiguous slab of `slab_bytes` (a multiple of 4096) at a 4096-aligned offset of its
// layer file, so that one O_DIRECT read fetches a whole expert. Inside a slab the expert's matrices sit at
// 16-byte aligned offsets in `tensors` order, each in the weight_format.hpp layout of the sidecar's quant
// type; the rest of the slab is zero. A GPU buffer of slots of `slab_bytes` each is therefore directly an
// ExpertWeightsRef per tensor (offset = tensor offset, expert_stride = slab_bytes): see tensor_ref().
// Every slab carries an XXH64 checksum of all its slab_bytes. docs/formats.md documents the JSON keys.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mach/error.hpp"
#include "model/config.hpp"
#include "ops/weight_format.hpp"
#include "runtime/io_buffer.hpp"

namespace mach::experts {

inline constexpr uint32_t kSidecarVersion = 1;
inline constexpr uint64_t kSlabAlignment = 4096;   // O_DIRECT offsets, lengths and buffers
inline constexpr uint64_t kTensorAlignment = 16;   // weight_format.hpp's matrix alignment
inline constexpr const char* kSidecarDir = "expert_sidecar";
inline constexpr const char* kLayoutFile = "layout.json";

// One matrix inside a slab: [rows, cols] of the sidecar's quant type at `offset` from the slab start.
struct SlabTensor {
  std::string name;  // qwen3_moe: "gate_up" [2I, H] (gate rows, then up rows), "down" [H, I]
  uint32_t rows = 0;
  uint32_t cols = 0;
  uint64_t offset = 0;  // multiple of 16
  uint64_t bytes = 0;   // weight_bytes(quant, rows, cols)
};

struct SidecarExpert {
  uint32_t source_id = 0;  // the expert's id in the source checkpoint (differs from its index after --keep)
  uint64_t offset = 0;     // in the layer file, a multiple of 4096
  uint64_t bytes = 0;      // == slab_bytes
  uint64_t checksum = 0;   // XXH64 of the slab's bytes
};

// One MoE layer. experts[i] is the expert the router calls i.
struct SidecarLayer {
  uint32_t layer = 0;           // the model's layer number
  std::string file;             // "layer_NN.bin", relative to the sidecar directory
  uint64_t file_bytes = 0;      // expected size of the file
  uint32_t source_experts = 0;  // experts of this layer in the source checkpoint
  std::vector<SidecarExpert> experts;
};

struct SidecarLayout {
  uint32_t version = kSidecarVersion;
  std::string model_type;
  std::string fingerprint;  // model_fingerprint() of the config.json beside the sidecar
  ops::WeightType quant = ops::WeightType::bf16;
  uint64_t slab_bytes = 0;
  std::vector<SlabTensor> tensors;
  std::vector<SidecarLayer> layers;  // ascending layer numbers

  uint64_t expert_count() const;  // over all layers
  uint64_t expert_bytes() const { return expert_count() * slab_bytes; }
  const SidecarLayer* find_layer(uint32_t layer) const;  // nullptr when the layer has no experts
};

// The slab layout of qwen3_moe experts in `quant`: tensors gate_up [2I, H] then down [H, I].
SidecarLayout qwen3_moe_slab_layout(const model::ModelConfig& config, ops::WeightType quant);

// A hash of the config fields the sidecar depends on (model_type, layers, hidden, expert shape and count,
// top-k) and the quant type, as 16 hex digits. A sidecar whose fingerprint differs from its config.json's
// belongs to another model.
std::string model_fingerprint(const model::ModelConfig& config, ops::WeightType quant);

// Keys in the documented order (docs/formats.md), for people reading the file.
nlohmann::ordered_json layout_to_json(const SidecarLayout& layout);
// Structural validation only (no files touched); errors name `source`, the layer and the expert.
Result<SidecarLayout> layout_from_json(const nlohmann::json& json, const std::string& source);

// The file name of a layer: "layer_07.bin", "layer_123.bin".
std::string layer_file_name(uint32_t layer);

// An opened, validated sidecar. These synchronous reads (pread, O_DIRECT where the filesystem allows it, one
// open per call) serve tools and tests; the streaming miss path reads through the io_uring ring instead.
// Const methods are safe to call from several threads.
class Sidecar {
 public:
  // `dir` is the expert_sidecar directory. Validates layout.json against itself and every layer file's size;
  // every failure is one line naming the file, layer and expert. Reads no slab.
  static Result<Sidecar> open(const std::filesystem::path& dir);

  const SidecarLayout& layout() const { return layout_; }
  const std::filesystem::path& dir() const { return dir_; }

  // Reads expert `index` of model layer `layer` into a 4096-aligned buffer of slab_bytes. No checksum check.
  Result<runtime::IoBuffer> read_expert(uint32_t layer, uint32_t index) const;
  // Reads the slab and checks its checksum; a mismatch is Errc::io naming file, layer and expert.
  Result<runtime::IoBuffer> read_verified(uint32_t layer, uint32_t index) const;
  Result<void> verify_expert(uint32_t layer, uint32_t index) const;
  // The error for slab `bytes` of expert `index` of `layer` when its checksum differs from layout.json's;
  // nothing when it matches (the check every reader of slabs runs).
  Result<void> check_slab(uint32_t layer, uint32_t index, std::span<const std::byte> bytes) const;
  // verify_expert over every expert; stops at the first failure.
  Result<void> verify_all() const;

 private:
  Sidecar(std::filesystem::path dir, SidecarLayout layout) : dir_(std::move(dir)), layout_(std::move(layout)) {}
  std::filesystem::path dir_;
  SidecarLayout layout_;
};

// Where tensor `t` of the slab sits for a stack of `count` slabs starting at `base` in `buffer` (a GPU bank
// of slots, or all experts of a layer resident).
ops::ExpertWeightsRef tensor_ref(const SidecarLayout& layout, size_t t, const gpu::Buffer* buffer, uint64_t base,
                                 uint32_t count);

}  // namespace mach::experts
