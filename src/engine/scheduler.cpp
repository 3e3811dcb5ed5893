#include "engine/scheduler.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include "engine/prefix_cache.hpp"
#include "experts/host_experts.hpp"

namespace mach::engine {

DraftVerdict verify_draft(Sampler& sampler, std::span<float> logits, std::span<const uint32_t> generated,
                          uint32_t draft) {
  if (sampler.greedy()) {
    const uint32_t target = sampler.sample(logits, generated);
    return {target == draft, target};
  }
  // Speculative rejection sampling with a point-mass proposal q = [draft]: accept the draft with probability
  // p(draft), else draw from the residual max(p - q, 0) renormalized, which is p without the draft. Either
  // way the token follows p exactly.
  auto dist = sampler.distribution(logits, generated);
  float p = 0;
  for (const auto& [token, prob] : dist)
    if (token == draft) p = prob;
  if (sampler.uniform() < p) return {true, draft};
  std::erase_if(dist, [&](const auto& e) { return e.first == draft; });
  return {false, dist.empty() ? draft : sampler.draw(dist)};
}

struct Scheduler::Sequence {
  uint32_t id = 0;
  SequenceRequest req;
  int slot = -1;                 // KV-cache sequence slot while admitted
  uint32_t prefilled = 0;        // prompt tokens already in the KV cache
  std::vector<uint32_t> tokens;  // prompt, then generated
  std::vector<uint32_t> generated;
  Sampler sampler;
  std::unique_ptr<Drafter> drafter;
  uint32_t draft_max = 0;
  uint32_t draft_len = 0;        // adapted to recent acceptance
  std::vector<uint32_t> drafts;  // of the step in flight
  bool done = false;
  SequenceResult result;
  std::optional<JsonMachine> json;  // JSON mode: the text so far

  explicit Sequence(SequenceRequest r) : req(std::move(r)), sampler(req.sampling) {
    if (req.json_object) json.emplace();
  }
  bool prefilling() const { return prefilled < req.prompt.size(); }
};

// Which logits rows of the step belong to which sequence.
struct Scheduler::RowUse {
  uint32_t seq;
  uint32_t first_row;
  uint32_t rows;
  bool prefill_end;  // the prompt's last token: sample the first generated token
};

// A sequence's verdict on its rows of a step: the tokens to append in order (the accepted drafts, then the
// correction or bonus token), their log-probabilities when the request asked, and how many were drafts.
struct Scheduler::Decision {
  std::vector<uint32_t> tokens;
  std::vector<TokenLogprob> logprobs;
  uint32_t accepted = 0;
  std::string error;           // JSON mode found no token to continue with: the sequence fails
  std::vector<float> row;      // scratch: the row being sampled (sampling changes it)
  std::vector<uint32_t> seen;  // scratch: the generated tokens plus those accepted in this block
  std::vector<uint8_t> allowed;  // scratch: JSON mode's allowed tokens
};

Scheduler::Scheduler(gpu::Context& context, model::Model& model, const SchedulerOptions& options)
    : context_(context),
      model_(model),
      options_(options),
      cmd_(context.begin_commands()),
      slot_owner_(options.max_batch, -1) {}

Scheduler::~Scheduler() = default;

Result<uint32_t> Scheduler::submit(SequenceRequest request) {
  const uint32_t vocab = model_.config().vocab_size;
  if (request.prompt.empty()) return Error{Errc::invalid_argument, "the prompt is empty"};
  for (uint32_t id : request.prompt)
    if (id >= vocab)
      return Error{Errc::invalid_argument, fmt::format("prompt token {} is outside the vocabulary ({})", id, vocab)};
  if (request.json_object && request.json_object->vocab_size() != vocab)
    return Error{Errc::invalid_argument, fmt::format("the JSON mode table has {} tokens, the model {}",
                                                     request.json_object->vocab_size(), vocab)};
  if (request.json_object) request.speculation = Speculation::none;  // drafts would bypass the constraint
  if (request.draft_max == 0) request.draft_max = default_draft_max(request.speculation);
  if (request.speculation == Speculation::none) request.draft_max = 0;
  const uint64_t need = request.prompt.size() + request.max_tokens + request.draft_max + 1;
  if (need > model_.kv_cache().max_context())
    return Error{Errc::invalid_argument,
                 fmt::format("prompt ({}) + max tokens ({}) + drafts ({}) exceed the context of {} tokens",
                             request.prompt.size(), request.max_tokens, request.draft_max,
                             model_.kv_cache().max_context())};
  if (request.top_logprobs > kMaxTopLogprobs)
    return Error{Errc::invalid_argument, fmt::format("top_logprobs is at most {}", kMaxTopLogprobs)};
  auto s = std::make_unique<Sequence>(std::move(request));
  s->id = next_id_++;
  s->tokens = s->req.prompt;
  s->draft_max = s->req.draft_max;
  s->draft_len = s->draft_max;
  if (s->req.speculation != Speculation::none)
    s->drafter = std::make_unique<NgramDrafter>(NgramDrafter::for_preset(s->req.speculation));
  const uint32_t id = s->id;
  waiting_.push_back(id);
  Sequence& added = *seqs_.emplace(id, std::move(s)).first->second;
  if (added.req.max_tokens == 0) finish(added, "length");
  return id;
}

Scheduler::Sequence& Scheduler::seq(uint32_t id) const {
  const auto it = seqs_.find(id);
  if (it == seqs_.end()) throw Exception(Error{Errc::invalid_argument, fmt::format("no sequence {} (released?)", id)});
  return *it->second;
}

const SequenceResult& Scheduler::result(uint32_t id) const { return seq(id).result; }

void Scheduler::release(uint32_t id) {
  const auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  if (!it->second->done) finish(*it->second, "cancelled");
  seqs_.erase(it);
}

bool Scheduler::idle() const {
  return std::none_of(seqs_.begin(), seqs_.end(), [](const auto& s) { return !s.second->done; });
}

size_t Scheduler::waiting() const {
  return std::count_if(seqs_.begin(), seqs_.end(), [](const auto& s) { return !s.second->done && s.second->slot < 0; });
}

size_t Scheduler::running() const {
  return std::count_if(seqs_.begin(), seqs_.end(), [](const auto& s) { return !s.second->done && s.second->slot >= 0; });
}

size_t Scheduler::fail_unadmittable() {
  if (running() > 0) return 0;  // blocks will come back
  size_t failed = 0;
  for (auto& [id, s] : seqs_) {
    if (s->done || s->slot >= 0) continue;
    finish(*s, "error", "the sequence needs more KV-cache blocks than the whole cache has");
    ++failed;
  }
  return failed;
}

void Scheduler::admit() {
  while (!waiting_.empty()) {
    const auto found = seqs_.find(waiting_.front());
    if (found == seqs_.end()) {
      waiting_.pop_front();
      continue;
    }
    Sequence& s = *found->second;
    if (s.done) {
      waiting_.pop_front();
      continue;
    }
    const auto free = std::find(slot_owner_.begin(), slot_owner_.end(), -1);
    if (free == slot_owner_.end()) return;
    const uint32_t slot = static_cast<uint32_t>(free - slot_owner_.begin());
    const uint32_t need = static_cast<uint32_t>(s.req.prompt.size() + s.req.max_tokens + s.draft_max + 1);
    if (!model_.kv_cache().reserve(slot, need)) return;  // the KV cache is full: wait for a sequence to finish
    s.slot = static_cast<int>(slot);
    *free = static_cast<int>(s.id);
    waiting_.pop_front();
    if (options_.prefix_cache) {
      // The prompt's last token is always computed: its logits start decoding.
      const std::span<const uint32_t> prompt(s.req.prompt);
      s.prefilled = options_.prefix_cache->restore(context_, model_.kv_cache(), slot, prompt.first(prompt.size() - 1));
      s.result.cached_tokens = s.prefilled;
    }
  }
}

void Scheduler::cancel(uint32_t id) {
  const auto it = seqs_.find(id);
  if (it != seqs_.end() && !it->second->done) finish(*it->second, "cancelled");
}

bool Scheduler::done(uint32_t id) const { return seq(id).done; }

std::span<const uint32_t> Scheduler::generated(uint32_t id) const { return seq(id).generated; }

std::span<const TokenLogprob> Scheduler::generated_logprobs(uint32_t id) const { return seq(id).result.logprobs; }

void Scheduler::finish(Sequence& s, const char* reason, std::string error) {
  if (s.done) return;
  s.done = true;
  s.result.tokens = s.generated;
  s.result.finish_reason = reason;
  s.result.error = std::move(error);
  if (s.slot >= 0) {
    model_.kv_cache().release(static_cast<uint32_t>(s.slot));
    slot_owner_[s.slot] = -1;
    s.slot = -1;
  }
}

TokenLogprob token_logprob(std::span<const float> logits, uint32_t token, uint32_t top_n) {
  // log-softmax in double: logits of a large vocabulary summed in float lose the small terms.
  double max = -INFINITY;
  for (float x : logits) max = std::max<double>(max, x);
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max);
  const double log_z = max + std::log(sum);
  TokenLogprob out;
  out.logprob = static_cast<float>(logits[token] - log_z);
  if (top_n > 0) {
    std::vector<uint32_t> ids(logits.size());
    for (uint32_t i = 0; i < ids.size(); ++i) ids[i] = i;
    const auto n = std::min<size_t>(top_n, ids.size());
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](uint32_t a, uint32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (size_t i = 0; i < n; ++i) out.top.emplace_back(ids[i], static_cast<float>(logits[ids[i]] - log_z));
  }
  return out;
}

bool Scheduler::emit(Sequence& s, uint32_t token, TokenLogprob* logprob) {
  if (logprob) s.result.logprobs.push_back(std::move(*logprob));
  s.generated.push_back(token);
  s.tokens.push_back(token);
  if (std::find(s.req.stop_ids.begin(), s.req.stop_ids.end(), token) != s.req.stop_ids.end()) {
    finish(s, "stop");
    return false;
  }
  if (s.generated.size() >= s.req.max_tokens) {
    finish(s, "length");
    return false;
  }
  return true;
}

void Scheduler::plan_prefill() {
  const uint32_t budget = model_.max_step_tokens();
  for (auto& [id, sp] : seqs_) {
    Sequence& s = *sp;
    if (s.done || s.slot < 0 || !s.prefilling()) continue;
    const uint32_t room = budget - static_cast<uint32_t>(tokens_.size());
    if (room == 0) break;
    const uint32_t n = std::min<uint32_t>(room, static_cast<uint32_t>(s.req.prompt.size()) - s.prefilled);
    for (uint32_t i = 0; i < n; ++i) {
      tokens_.push_back(s.req.prompt[s.prefilled + i]);
      seq_of_token_.push_back(static_cast<uint32_t>(s.slot));
      positions_.push_back(s.prefilled + i);
    }
    s.prefilled += n;
    if (!s.prefilling()) {
      uses_.push_back({s.id, static_cast<uint32_t>(logit_rows_.size()), 1, true});
      logit_rows_.push_back(static_cast<uint32_t>(tokens_.size()) - 1);
    }
  }
}

void Scheduler::plan_decode() {
  const uint32_t budget = model_.max_step_tokens();
  for (auto& [id, sp] : seqs_) {
    Sequence& s = *sp;
    if (s.done || s.slot < 0 || s.prefilling()) continue;
    const uint32_t room = budget - static_cast<uint32_t>(tokens_.size());
    if (room == 0) break;
    s.drafts.clear();
    const uint32_t left = s.req.max_tokens - static_cast<uint32_t>(s.generated.size());  // >= 1
    const uint32_t k = std::min({s.draft_len, left - 1, room - 1});
    if (s.drafter && k > 0) s.drafts = s.drafter->draft(s.tokens, k);
    const uint32_t pos = static_cast<uint32_t>(s.tokens.size()) - 1;
    uses_.push_back({s.id, static_cast<uint32_t>(logit_rows_.size()), 1 + static_cast<uint32_t>(s.drafts.size()), false});
    for (uint32_t i = 0; i <= s.drafts.size(); ++i) {
      tokens_.push_back(i == 0 ? s.tokens.back() : s.drafts[i - 1]);
      seq_of_token_.push_back(static_cast<uint32_t>(s.slot));
      positions_.push_back(pos + i);
      logit_rows_.push_back(static_cast<uint32_t>(tokens_.size()) - 1);
    }
  }
}

std::optional<gpu::Ticket> Scheduler::step_begin() {
  admit();
  tokens_.clear();
  seq_of_token_.clear();
  positions_.clear();
  logit_rows_.clear();
  uses_.clear();
  const bool any_prefill = std::any_of(seqs_.begin(), seqs_.end(), [](const auto& e) {
    const auto& s = e.second;
    return !s->done && s->slot >= 0 && s->prefilling();
  });
  const bool any_decode = std::any_of(seqs_.begin(), seqs_.end(), [](const auto& e) {
    const auto& s = e.second;
    return !s->done && s->slot >= 0 && !s->prefilling();
  });
  // Alternate when both kinds wait, so that new prompts neither starve nor stall running streams.
  const bool prefill = any_prefill && (!any_decode || !last_was_prefill_);
  if (prefill)
    plan_prefill();
  else if (any_decode)
    plan_decode();
  if (tokens_.empty()) return std::nullopt;
  last_was_prefill_ = prefill;
  last_step_ = {static_cast<uint32_t>(tokens_.size()), static_cast<uint32_t>(uses_.size()), prefill};
  ++steps_;
  const model::StepBatch batch{tokens_, seq_of_token_, positions_, logit_rows_};
  if (gpu::CommandList* replay = model_.replay_step(batch)) return context_.submit(*replay);
  cmd_->begin();
  model_.record_step(*cmd_, batch);
  return context_.submit(*cmd_);
}

std::optional<gpu::Ticket> Scheduler::step_next() {
  if (!model_.step_pending()) return std::nullopt;
  cmd_->begin();
  if (auto r = model_.continue_step(*cmd_); !r) {
    // Every sequence with tokens in the step: its KV entries of this step are incomplete.
    for (uint32_t slot : seq_of_token_)
      if (slot_owner_[slot] >= 0) finish(*seqs_[slot_owner_[slot]], "error", r.error().message);
    uses_.clear();
    return std::nullopt;
  }
  return context_.submit(*cmd_);
}

void Scheduler::decide(Sequence& s, std::span<const float> rows, uint32_t n_rows, bool prefill_end, Decision& d) {
  const uint64_t V = rows.size() / n_rows;
  d.tokens.clear();
  d.logprobs.clear();
  d.error.clear();
  d.accepted = 0;
  d.row.resize(V);
  const auto raw = [&](uint32_t i) { return rows.subspan(i * V, V); };
  const auto pick = [&](uint32_t i, uint32_t token) {
    d.tokens.push_back(token);
    if (s.req.logprobs) d.logprobs.push_back(token_logprob(raw(i), token, s.req.top_logprobs));
  };
  // A prompt's last row, or a decode row without drafts: one token.
  const uint32_t k = prefill_end ? 0 : n_rows - 1;
  if (k == 0) {
    std::copy_n(rows.begin(), V, d.row.begin());
    if (s.json) {
      // JSON mode: the tokens that do not continue the text are out of the draw.
      s.req.json_object->allowed(*s.json, d.allowed);
      if (std::find(d.allowed.begin(), d.allowed.end(), 1) == d.allowed.end()) {
        d.error = "JSON mode: no token of the vocabulary continues the JSON text";
        return;
      }
      for (uint64_t t = 0; t < V; ++t)
        if (!d.allowed[t]) d.row[t] = -INFINITY;
    }
    const uint32_t token = s.sampler.sample(d.row, s.generated);
    if (s.json) s.json->feed(s.req.json_object->bytes(token));
    pick(0, token);
    return;
  }
  // A verify block: each draft against the target's row, the penalties seeing the drafts accepted before it.
  d.seen = s.generated;
  for (uint32_t i = 0; i <= k; ++i) {
    std::copy_n(rows.begin() + i * V, V, d.row.begin());
    if (i == k) {  // every draft accepted: the bonus token
      pick(i, s.sampler.sample(d.row, d.seen));
      break;
    }
    const uint32_t draft = s.drafts[i];
    const auto [ok, instead] = verify_draft(s.sampler, d.row, d.seen, draft);
    if (!ok) {
      pick(i, instead);
      break;
    }
    ++d.accepted;
    pick(i, draft);
    d.seen.push_back(draft);
  }
}

void Scheduler::apply(Sequence& s, const RowUse& use, Decision& d) {
  if (use.prefill_end && options_.prefix_cache)
    options_.prefix_cache->store(context_, model_.kv_cache(), static_cast<uint32_t>(s.slot), s.req.prompt);
  if (!d.error.empty()) {
    finish(s, "error", d.error);
    return;
  }
  // JSON mode: the object closed with this token (a stop token the table allowed ends the sequence anyway).
  const auto json_done = [&] {
    if (s.json && s.json->complete() && !s.done) finish(s, "stop");
  };
  if (use.prefill_end) {
    emit(s, d.tokens[0], s.req.logprobs ? &d.logprobs[0] : nullptr);
    json_done();
    return;
  }
  const uint32_t k = use.rows - 1;
  auto& stats = s.result.speculation;
  ++stats.steps;
  stats.drafted += k;
  if (stats.drafted_at.size() < k) stats.drafted_at.resize(k), stats.accepted_at.resize(k);
  for (uint32_t i = 0; i < k; ++i) ++stats.drafted_at[i];
  uint32_t accepted = 0;
  for (size_t i = 0; i < d.tokens.size(); ++i) {
    if (i < d.accepted) {
      ++accepted;
      ++stats.accepted_at[i];
    }
    if (!emit(s, d.tokens[i], s.req.logprobs ? &d.logprobs[i] : nullptr)) break;
  }
  json_done();
  stats.accepted += accepted;
  // Adaptive block length: grow after a fully accepted block, halve after an early rejection.
  if (k > 0) {
    if (accepted == k)
      s.draft_len = std::min(s.draft_len + 1, s.draft_max);
    else if (accepted < k / 2)
      s.draft_len = std::max(1u, s.draft_len / 2);
  }
}

void Scheduler::step_end() {
  if (uses_.empty()) return;  // a failed step, or one of prompt chunks only
  const uint32_t V = model_.config().vocab_size;
  logits_.resize(uint64_t{logit_rows_.size()} * V);
  context_.download(model_.logits(), 0, std::as_writable_bytes(std::span<float>(logits_)));
  // Sampling a large vocabulary costs about a millisecond per row on a host core: the sequences of the step
  // decide side by side (each touches only its own sampler), then append their tokens here in order.
  if (decisions_.size() < uses_.size()) decisions_.resize(uses_.size());
  std::vector<Sequence*> live(uses_.size(), nullptr);
  uint32_t n_live = 0;
  for (size_t i = 0; i < uses_.size(); ++i) {
    const auto found = seqs_.find(uses_[i].seq);
    if (found == seqs_.end() || found->second->done) continue;  // released or cancelled while the step ran
    live[i] = found->second.get();
    ++n_live;
  }
  const auto decide_one = [&](uint32_t i) {
    if (!live[i]) return;
    const RowUse& use = uses_[i];
    const std::span<const float> rows(logits_.data() + uint64_t{use.first_row} * V, uint64_t{use.rows} * V);
    decide(*live[i], rows, use.rows, use.prefill_end, decisions_[i]);
  };
  if (n_live >= 2) {
    if (!sample_pool_) {
      const unsigned threads = options_.sample_threads
                                   ? options_.sample_threads
                                   : std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
      // Workers sleep as soon as they are idle: between steps they would take cores from the GPU's feeding
      // (and from host experts, which compute while the step runs).
      sample_pool_ = std::make_unique<experts::WorkerPool>(threads, std::chrono::microseconds(0));
    }
    sample_pool_->start({static_cast<uint32_t>(uses_.size())}, [&](uint32_t, uint32_t i) { decide_one(i); });
    sample_pool_->wait();
  } else {
    for (uint32_t i = 0; i < uses_.size(); ++i) decide_one(i);
  }
  for (size_t i = 0; i < uses_.size(); ++i) {
    // An earlier sequence's apply cannot end this one (each ends only itself), but stay defensive.
    if (live[i] && !live[i]->done) apply(*live[i], uses_[i], decisions_[i]);
  }
}

void Scheduler::run() {
  while (!idle()) {
    const auto ticket = step_begin();
    if (!ticket) {
      // Nothing can run: a waiting sequence needs more KV blocks than the whole cache has.
      for (auto& [id, s] : seqs_)
        if (!s->done) finish(*s, "error", "the sequence needs more KV-cache blocks than the whole cache has");
      break;
    }
    context_.wait(*ticket);
    while (auto next = step_next()) context_.wait(*next);
    step_end();
  }
}

}  // namespace mach::engine
