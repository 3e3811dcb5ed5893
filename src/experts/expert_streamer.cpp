#include "experts/expert_streamer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace mach::experts {
namespace {

uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

uint64_t ns_since(std::chrono::steady_clock::time_point t0) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace

Result<std::unique_ptr<ExpertStreamer>> ExpertStreamer::create(gpu::Context& context, Sidecar sidecar,
                                                               const StreamerOptions& options) {
  if (options.slots == 0) return Error{Errc::invalid_argument, "expert streaming needs at least one slot per layer"};
  std::unique_ptr<ExpertStreamer> s(new ExpertStreamer(context, std::move(sidecar)));
  const SidecarLayout& layout = s->sidecar_.layout();
  for (const auto& l : layout.layers) s->experts_ = std::max<uint32_t>(s->experts_, l.experts.size());
  // Experts the host computes never take a slot: a bank larger than the rest would stay partly empty.
  const uint32_t streamed = options.host_experts < s->experts_ ? s->experts_ - options.host_experts : 1;
  s->slots_ = std::min(options.slots, streamed);
  const uint64_t bank_bytes = uint64_t{s->slots_} * layout.slab_bytes;
  if (bank_bytes > context.info().max_storage_buffer_range)
    return Error{Errc::unsupported,
                 fmt::format("a bank of {} slots of {} bytes is {} bytes, more than this device binds at once ({}); "
                             "use fewer --expert-slots or a smaller --expert-cache-gb", s->slots_, layout.slab_bytes,
                             bank_bytes, context.info().max_storage_buffer_range)};
  try {
    const uint64_t align = std::max<uint64_t>(256, context.info().min_storage_buffer_offset_alignment);
    s->table_stride_ = round_up(uint64_t{s->experts_} * 4, align);
    s->bank_of_.assign(layout.layers.back().layer + 1, -1);
    for (const auto& l : layout.layers) {
      s->bank_of_[l.layer] = static_cast<int>(s->banks_.size());
      auto buffer =
          context.create_buffer(bank_bytes, gpu::MemoryKind::device, fmt::format("expert bank {}", l.layer), true);
      s->banks_.emplace_back(l.layer, std::move(buffer),
                             SlotMap(static_cast<uint32_t>(l.experts.size()), std::min<uint32_t>(s->slots_, l.experts.size()),
                                     make_eviction_policy(options.eviction, s->slots_), options.upload_cap));
      s->stats_.layers.push_back({.layer = l.layer, .uses = std::vector<uint64_t>(l.experts.size())});
    }
    s->tables_ = context.create_buffer(s->table_stride_ * s->banks_.size(), gpu::MemoryKind::device, "expert slot tables");
    context.fill(s->tables_, 0, s->tables_.size(), ops::kNoSlot);
    // With the RAM tier the slabs are read into its entries and copied from there: staging holds the table.
    s->table_at_ = options.host_cache_bytes ? 0 : bank_bytes;
    s->staging_ = context.create_buffer(s->table_at_ + s->table_stride_, gpu::MemoryKind::host_upload,
                                        "expert staging");
  } catch (const Exception& e) {
    return e.error();
  }
  if (options.host_cache_bytes) {
    // More than every slab of the sidecar would never be used.
    auto ram = HostCache::create(context, layout.slab_bytes, std::min(options.host_cache_bytes, layout.expert_bytes()),
                                 s->slots_);
    if (!ram) return ram.error();
    s->ram_ = std::move(ram).value();
    s->stats_.host_cache_bytes = s->ram_->bytes();
    s->stats_.host_cache_entries = s->ram_->entries();
  }
  auto reader = SlabReader::open(s->sidecar_, options.queue_depth);
  if (!reader) return reader.error();
  s->reader_ = std::move(reader).value();
  if (auto r = s->load_pinned(options.pinned); !r) return r.error();
  if (options.host_experts) {
    auto host = HostExperts::create(context, s->sidecar_, *s->reader_, options.pinned, options.host_experts,
                                    options.host_threads);
    if (!host) return host.error();
    s->host_ = std::move(host).value();
    s->stats_.host_experts = s->host_->per_layer();
    s->stats_.host_threads = s->host_->threads();
    s->stats_.host_experts_bytes = s->host_->bytes();
    s->stats_.host_simd = s->host_->simd() ? "avx2" : "portable";
    s->stats_.host_max_tokens = options.host_max_tokens;
    s->host_max_tokens_ = options.host_max_tokens;
  }
  s->prefetch_ = options.prefetch && s->ram_ != nullptr;
  s->predicted_.resize(s->banks_.size());
  const char* ahead_env = std::getenv("MACH_UPLOAD_AHEAD");
  s->upload_ahead_ = s->prefetch_ && !(ahead_env && std::string_view(ahead_env) == "0");
  s->ahead_.resize(s->banks_.size());
  s->ahead_ticket_.resize(s->banks_.size());
  s->ahead_since_.resize(s->banks_.size());
  if (s->upload_ahead_) {
    try {
      for (int i = 0; i < 4; ++i) {
        s->uploads_.push_back(context.begin_transfer_commands());
        s->upload_tickets_.push_back({});
      }
    } catch (const Exception& e) {
      return e.error();
    }
  }
  s->stats_.upload_ahead = s->upload_ahead_;
  s->stats_.transfer_queue = s->upload_ahead_ ? context.transfer_queue_kind() : "";
  s->stats_.prefetch = s->prefetch_;
  s->stats_.streaming = true;
  s->stats_.slots_per_layer = s->slots_;
  s->stats_.upload_cap = s->banks_.empty() ? 0 : s->banks_.front().map.upload_cap();
  s->stats_.bank_bytes = bank_bytes * s->banks_.size();
  s->stats_.slab_bytes = layout.slab_bytes;
  s->stats_.eviction = std::string(eviction_name(options.eviction));
  s->stats_.direct_read = s->reader_->direct_read();
  return s;
}

ExpertStreamer::~ExpertStreamer() {
  finish_host();
  if (uploads_.empty()) return;
  try {
    context_.wait_transfers({context_.last_transfer()});
  } catch (const Exception&) {
    // A lost device: nothing is in flight any more.
  }
}

Result<void> ExpertStreamer::load_pinned(const std::map<uint32_t, std::vector<uint32_t>>& pinned) {
  const uint64_t slab = sidecar_.layout().slab_bytes;
  std::vector<std::byte> bytes(slab);
  for (const auto& [layer, ids] : pinned) {
    if (layer >= bank_of_.size() || bank_of_[layer] < 0)
      return Error{Errc::invalid_argument, fmt::format("--pin-experts: layer {} has no routed experts", layer)};
    LayerBank& b = bank(layer);
    if (ids.size() + 1 > b.map.slots())
      return Error{Errc::invalid_argument,
                   fmt::format("--pin-experts: layer {} pins {} experts, but with {} slots per layer at most {} can be "
                               "pinned (one slot must stay free); pin fewer or give more --expert-slots", layer,
                               ids.size(), b.map.slots(), b.map.slots() - 1)};
    for (uint32_t e : ids) {
      if (e >= b.map.experts() || b.map.slot_of(e) != ops::kNoSlot)
        return Error{Errc::invalid_argument, fmt::format("--pin-experts: layer {} has no expert {} (it has {}), or "
                                                         "it is listed twice", layer, e, b.map.experts())};
      const SlotLoad load = b.map.pin(e);
      const SlabRead read{layer, e, bytes.data()};
      if (auto r = reader_->read(std::span(&read, 1)); !r[0]) return r[0].error();
      context_.upload(b.slots, uint64_t{load.slot} * slab, bytes);
    }
    stats_.layers[bank_of_[layer]].pinned = static_cast<uint32_t>(ids.size());
  }
  return {};
}

ExpertStreamer::LayerBank& ExpertStreamer::bank(uint32_t layer) {
  assert(layer < bank_of_.size() && bank_of_[layer] >= 0);
  return banks_[bank_of_[layer]];
}

const ExpertStreamer::LayerBank& ExpertStreamer::bank(uint32_t layer) const {
  assert(layer < bank_of_.size() && bank_of_[layer] >= 0);
  return banks_[bank_of_[layer]];
}

ops::ExpertWeightsRef ExpertStreamer::tensor(uint32_t layer, size_t t) const {
  return tensor_ref(sidecar_.layout(), t, &bank(layer).slots, 0, slots_);
}

gpu::Binding ExpertStreamer::slot_table(uint32_t layer) const {
  return gpu::in(tables_, static_cast<uint64_t>(bank_of_.at(layer)) * table_stride_, uint64_t{experts_} * 4);
}

bool ExpertStreamer::begin_layer(uint32_t layer, std::span<const uint32_t> ids, uint32_t tokens) {
  LayerBank& b = bank(layer);
  std::vector<uint32_t> needed(ids.begin(), ids.end());
  std::sort(needed.begin(), needed.end());
  needed.erase(std::unique(needed.begin(), needed.end()), needed.end());
  assert(needed.empty() || needed.back() < b.map.experts());
  next_pass_ = 0;
  current_ = static_cast<int>(layer);
  ++b.tick;
  ExpertLayerStats& st = stats_.layers[bank_of_[layer]];
  for (uint32_t e : needed) ++st.uses[e];
  const bool on_host = host_computes(tokens);
  if (on_host) std::erase_if(needed, [&](uint32_t e) { return host_->holds(layer, e); });
  passes_ = b.map.plan(needed);
  std::vector<uint32_t>& predicted = predicted_[bank_of_[layer]];
  if (!predicted.empty()) {
    st.prefetch_predicted += predicted.size();
    for (uint32_t e : predicted) st.prefetch_correct += std::binary_search(needed.begin(), needed.end(), e) ? 1 : 0;
    predicted.clear();
  }
  ahead_now_ = std::move(ahead_[bank_of_[layer]]);
  ahead_[bank_of_[layer]].clear();
  // The layer's products are recorded from now on: the submissions that carry them wait for its uploads.
  const gpu::Ticket ahead = ahead_ticket_[bank_of_[layer]];
  context_.require_transfer(ahead);
  if (!ahead_now_.empty() && context_.transfers_done() < ahead.value) {
    ++st.ahead_late;
    st.ahead_late_age_ns += ns_since(ahead_since_[bank_of_[layer]]);
  }
  std::sort(ahead_now_.begin(), ahead_now_.end());
  return on_host;
}

void ExpertStreamer::make_claimable(uint64_t stamp) {
  if (ram_->claimable(stamp)) return;  // the common case: no query of the transfer timeline
  ram_->release(context_.transfers_done());
  if (ram_->claimable(stamp)) return;
  context_.wait_transfers({context_.last_transfer()});
  ram_->release(context_.transfers_done());
}

uint32_t ExpertStreamer::upload_predicted(uint32_t layer) {
  if (!upload_ahead_ || layer >= bank_of_.size() || bank_of_[layer] < 0) return 0;
  const int bi = bank_of_[layer];
  LayerBank& b = bank(layer);
  ExpertLayerStats& st = stats_.layers[bi];
  const uint64_t slab = sidecar_.layout().slab_bytes;
  std::vector<uint32_t> up;
  for (uint32_t e : predicted_[bi])
    if (b.map.slot_of(e) == ops::kNoSlot && ram_->contains(layer, e)) up.push_back(e);
  if (up.size() > b.map.upload_cap()) up.resize(b.map.upload_cap());
  if (up.empty()) return 0;
  const std::vector<SlotLoad> loads = b.map.preload(up, b.tick + 1);
  // The ring's next list, once its previous uploads are done (four layers ago: long done in practice).
  gpu::CommandList& list = *uploads_[next_upload_];
  context_.wait_transfers(upload_tickets_[next_upload_]);
  list.begin();
  const uint64_t stamp = ++pass_stamp_;
  const uint64_t ticket = context_.last_transfer() + 1;  // the submission below
  for (const SlotLoad& l : loads) {
    const std::optional<HostCache::Entry> entry = ram_->find(layer, l.expert, stamp);
    assert(entry);
    list.copy(*entry->buffer, entry->offset, b.slots, uint64_t{l.slot} * slab, slab);
    ram_->hold(layer, l.expert, ticket);
    ahead_[bi].push_back(l.expert);
  }
  upload_tickets_[next_upload_] = context_.submit_transfer(list);
  assert(upload_tickets_[next_upload_].value == ticket);
  ahead_ticket_[bi] = upload_tickets_[next_upload_];
  ahead_since_[bi] = std::chrono::steady_clock::now();
  next_upload_ = (next_upload_ + 1) % uploads_.size();
  st.ahead_uploads += loads.size();
  st.bytes_uploaded += loads.size() * slab;
  return static_cast<uint32_t>(loads.size());
}

void ExpertStreamer::prefetch(uint32_t layer, std::span<const uint32_t> ids) {
  if (!prefetching() || layer >= bank_of_.size() || bank_of_[layer] < 0) return;
  LayerBank& b = bank(layer);
  ExpertLayerStats& st = stats_.layers[bank_of_[layer]];
  std::vector<uint32_t>& predicted = predicted_[bank_of_[layer]];
  predicted.assign(ids.begin(), ids.end());
  std::sort(predicted.begin(), predicted.end());
  predicted.erase(std::unique(predicted.begin(), predicted.end()), predicted.end());
  std::erase_if(predicted, [&](uint32_t e) { return e >= b.map.experts() || (host_ && host_->holds(layer, e)); });
  // At most a bank's worth in flight per layer: a pass cannot use more, and the tier keeps the rest of its
  // entries for what was really used.
  uint32_t started = 0;
  for (uint32_t e : predicted) {
    if (started == b.map.slots()) break;
    if (b.map.slot_of(e) != ops::kNoSlot || ram_->contains(layer, e)) continue;
    reader_->prefetch(layer, e);
    ++started;
    ++st.prefetch_reads;
  }
}

bool ExpertStreamer::start_pass_reads() {
  if (!ram_ || current_ < 0 || next_pass_ >= passes_.size()) return false;
  const uint32_t layer = static_cast<uint32_t>(current_);
  const LayerBank& b = bank(layer);
  ExpertLayerStats& st = stats_.layers[bank_of_[layer]];
  const bool idle = awaited_.empty();
  for (uint32_t e : passes_[next_pass_]) {
    if (b.map.slot_of(e) != ops::kNoSlot || ram_->contains(layer, e) || reader_->in_flight(layer, e)) continue;
    reader_->prefetch(layer, e);
    awaited_.insert({layer, e});
    ++st.awaited_reads;
    st.bytes_read += sidecar_.layout().slab_bytes;
  }
  if (idle && !awaited_.empty()) {
    awaited_since_ = std::chrono::steady_clock::now();
    awaited_timing_ = true;
  }
  return reads_pending();
}

bool ExpertStreamer::reads_pending() {
  if (reader_->poll_prefetches()) return true;
  if (awaited_timing_ && current_ >= 0) stats_.layers[bank_of_[current_]].read_ns += ns_since(awaited_since_);
  awaited_timing_ = false;
  return false;
}

void ExpertStreamer::collect_prefetches() {
  if (!ram_) return;
  const uint64_t slab = sidecar_.layout().slab_bytes;
  // A stamp of its own, as if the prefetched slabs were a pass: claim() never hands out an entry twice in one.
  const uint64_t stamp = ++pass_stamp_;
  for (SlabReader::Prefetched& p : reader_->take_prefetched()) {
    ExpertLayerStats& st = stats_.layers[bank_of_[p.layer]];
    const bool awaited = awaited_.erase({p.layer, p.expert}) != 0;
    if (!p.result) {
      // Not an error of any request yet: a use reads it again and reports what fails then.
      if (!awaited) ++st.prefetch_failed;
    } else if (!ram_->contains(p.layer, p.expert)) {
      make_claimable(stamp);
      const HostCache::Entry entry = ram_->claim(p.layer, p.expert, stamp);
      std::memcpy(entry.data, p.buffer.data(), slab);
      if (awaited) awaited_in_.insert({p.layer, p.expert});
    }
    reader_->recycle(std::move(p.buffer));
  }
}

Result<bool> ExpertStreamer::record_pass(gpu::CommandList& cmd) {
  assert(current_ >= 0);
  const uint32_t layer = static_cast<uint32_t>(current_);
  LayerBank& b = bank(layer);
  ExpertLayerStats& st = stats_.layers[bank_of_[layer]];
  const uint64_t slab = sidecar_.layout().slab_bytes;
  const std::vector<uint32_t> none;
  const std::vector<uint32_t>& pass = next_pass_ < passes_.size() ? passes_[next_pass_] : none;
  ++next_pass_;

  collect_prefetches();
  uint32_t hits = 0;
  const std::vector<SlotLoad> loads = b.map.place(pass, b.tick, hits);
  // Experts uploaded ahead for this step are resident now (hits of place()), but the step did miss them. One
  // evicted by an earlier pass of the step and loaded again is a plain miss of this pass.
  uint32_t ahead = 0;
  for (uint32_t e : pass) {
    const bool loaded = std::any_of(loads.begin(), loads.end(), [&](const SlotLoad& l) { return l.expert == e; });
    if (!loaded && std::binary_search(ahead_now_.begin(), ahead_now_.end(), e)) ++ahead;
  }
  st.hits += hits - ahead;
  st.misses += loads.size() + ahead;
  st.ram_hits += ahead;
  st.ahead_used += ahead;
  ++st.passes;
  // Where each load's bytes come from: a RAM-tier entry (found, or claimed and read now), or staging.
  ++pass_stamp_;
  std::vector<HostCache::Entry> sources(loads.size());
  std::vector<SlabRead> reads;
  std::vector<size_t> read_load;  // reads[i] is the read of loads[read_load[i]]
  for (size_t i = 0; i < loads.size(); ++i) {
    if (host_ && host_->holds(layer, loads[i].expert)) {  // a large step's host expert: copied from host memory
      const HostExperts::Source src = host_->source(layer, loads[i].expert);
      sources[i] = {src.buffer, src.offset, nullptr};
      ++st.ram_hits;
      continue;
    }
    if (ram_) {
      if (auto found = ram_->find(layer, loads[i].expert, pass_stamp_)) {
        sources[i] = *found;
        // A slab start_pass_reads read for this pass came from the sidecar (counted there), not the tier.
        if (awaited_in_.erase({layer, loads[i].expert}) == 0) ++st.ram_hits;
        continue;
      }
      make_claimable(pass_stamp_);
      sources[i] = ram_->claim(layer, loads[i].expert, pass_stamp_);
    } else {
      sources[i] = {&staging_, i * slab, staging_.mapped() + i * slab};
    }
    reads.push_back({layer, loads[i].expert, sources[i].data});
    read_load.push_back(i);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<Result<void>> results = reader_->read(reads);
  st.read_ns += ns_since(t0);
  st.bytes_read += reads.size() * slab;

  const Error* first = nullptr;
  for (size_t r = 0; r < reads.size(); ++r) {
    if (results[r]) continue;
    const uint32_t expert = reads[r].expert;
    ++st.errors;
    if (ram_) ram_->drop(layer, expert);  // never serve the failed read's bytes
    // One entry per expert, with its latest error, so that a lasting failure does not grow the list.
    auto it = std::find_if(stats_.bad.begin(), stats_.bad.end(), [&](const BadExpert& bad) {
      return bad.layer == layer && bad.expert == expert;
    });
    if (it == stats_.bad.end()) it = stats_.bad.insert(stats_.bad.end(), {layer, expert, ""});
    it->error = results[r].error().message;
    if (!first) first = &results[r].error();
  }
  if (first) {
    awaited_in_.clear();
    for (const SlotLoad& l : loads) b.map.forget(l.slot);
    passes_.clear();
    current_ = -1;
    return *first;
  }
  // A load that succeeded clears an earlier failure of that expert.
  std::erase_if(stats_.bad, [&](const BadExpert& bad) {
    return bad.layer == layer && std::any_of(loads.begin(), loads.end(), [&](const SlotLoad& l) {
             return l.expert == bad.expert;
           });
  });

  awaited_in_.clear();
  for (size_t i = 0; i < loads.size(); ++i)
    cmd.copy(*sources[i].buffer, sources[i].offset, b.slots, uint64_t{loads[i].slot} * slab, slab);
  st.bytes_uploaded += loads.size() * slab;
  // The pass's slot table: its experts' slots, kNoSlot elsewhere (their pairs are skipped, or already done).
  auto* table = reinterpret_cast<uint32_t*>(staging_.mapped() + table_at_);
  std::fill_n(table, experts_, ops::kNoSlot);
  for (uint32_t e : pass) table[e] = b.map.slot_of(e);
  cmd.copy(staging_, table_at_, tables_, static_cast<uint64_t>(bank_of_[layer]) * table_stride_, uint64_t{experts_} * 4);
  const bool last = next_pass_ >= passes_.size();
  if (last) {
    current_ = -1;
    ahead_now_.clear();
  }
  return last;
}

void ExpertStreamer::add_stall(uint32_t layer, uint64_t ns) { stats_.layers[bank_of_.at(layer)].stall_ns += ns; }

std::span<const uint32_t> ExpertStreamer::start_host(uint32_t layer, std::span<const uint32_t> ids, uint32_t k,
                                                     const float* x, float* y) {
  if (!host_) return {};
  assert(host_layer_ < 0);
  const std::span<const uint32_t> pairs = host_->start(layer, ids, k, x, y);
  if (pairs.empty()) return pairs;
  host_layer_ = static_cast<int>(layer);
  host_pairs_ = pairs.size();
  return pairs;
}

void ExpertStreamer::finish_host() {
  if (host_layer_ < 0) return;
  const auto t0 = std::chrono::steady_clock::now();
  host_->wait();
  ExpertLayerStats& st = stats_.layers[bank_of_[host_layer_]];
  st.host_pairs += host_pairs_;
  st.host_wait_ns += ns_since(t0);
  st.host_ns += host_->last_job_ns();
  host_layer_ = -1;
}

}  // namespace mach::experts
