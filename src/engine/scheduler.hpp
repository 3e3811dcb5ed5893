// Continuous batching over one model: sequences join and leave between steps; each step runs either the
// prompt chunks of sequences still prefilling or one decode token (plus its speculative drafts) of every
// sequence that is generating, then samples or verifies each sequence's rows.
//
// A step is: plan -> record -> submit -> wait -> sample / accept. The wait is the caller's: step_begin()
// records and submits and returns the GPU ticket; step_end() reads the logits after the ticket is reached.
// A streaming model's step has several segments (model.hpp): after each ticket the caller calls step_next(),
// which loads the next layer's missing experts and submits the next segment, until it returns nullopt.
// run() is the blocking loop for the command line and tests (Context::wait); the server drives the same
// two calls from a coroutine that co_awaits runtime::GpuBridge instead, so the loop never blocks.
//
// Prefill and decode never share a step: decode tokens then always run through the matrix-vector kernels
// (<= 8 tokens per step: every token's sums in the same order as when it runs alone), so batching does not
// change any sequence's greedy output.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/drafter.hpp"
#include "engine/json_constraint.hpp"
#include "engine/sampler.hpp"
#include "gpu/context.hpp"
#include "mach/error.hpp"
#include "model/model.hpp"

namespace mach::experts {
class WorkerPool;
}

namespace mach::engine {

struct SequenceRequest {
  std::vector<uint32_t> prompt;
  SamplingParams sampling;
  uint32_t max_tokens = 16;
  std::vector<uint32_t> stop_ids;
  Speculation speculation = Speculation::none;
  uint32_t draft_max = 0;  // 0: the preset's default
  // Log-probabilities of each generated token under the model's raw distribution (log-softmax of the
  // logits, before penalties, temperature and truncation), plus the top_logprobs most likely tokens.
  bool logprobs = false;
  uint32_t top_logprobs = 0;  // at most kMaxTopLogprobs
  // JSON mode: every generated token keeps the text a prefix of a JSON object (tokens the table does not
  // allow are never drawn), and the sequence finishes with "stop" once the object closes. Such a sequence
  // runs without drafts. The table is the tokenizer's (shared by every request).
  std::shared_ptr<const JsonTokenTable> json_object;
};

inline constexpr uint32_t kMaxTopLogprobs = 20;

struct TokenLogprob {
  float logprob = 0;
  std::vector<std::pair<uint32_t, float>> top;  // descending
};

struct SpeculationStats {
  uint64_t drafted = 0;
  uint64_t accepted = 0;
  uint64_t steps = 0;                     // decode steps of this sequence
  std::vector<uint64_t> accepted_at;      // [i]: drafts accepted at draft position i
  std::vector<uint64_t> drafted_at;       // [i]: drafts offered at draft position i
};

struct SequenceResult {
  std::vector<uint32_t> tokens;
  std::vector<TokenLogprob> logprobs;  // one per token when the request asked for them
  uint32_t cached_tokens = 0;  // prompt tokens restored from the prefix cache instead of computed
  std::string finish_reason;  // "stop", "length", "cancelled" or "error"
  std::string error;          // with "error": why (the KV cache can never hold it, an expert failed to load)
  SpeculationStats speculation;
};

// Verifying one drafted token against the target's logits for that position: whether it is accepted, and
// the token to emit (the draft when accepted, else the target's own choice). Greedy: accepted when it is
// the argmax. Sampled: standard speculative rejection sampling, so the emitted token follows the target's
// distribution exactly.
struct DraftVerdict {
  bool accepted;
  uint32_t token;
};
// The log-probability of `token` under log-softmax(logits), and the top_n most likely tokens with theirs.
TokenLogprob token_logprob(std::span<const float> logits, uint32_t token, uint32_t top_n);

DraftVerdict verify_draft(Sampler& sampler, std::span<float> logits, std::span<const uint32_t> generated,
                          uint32_t draft);

class PrefixCache;

struct SchedulerOptions {
  uint32_t max_batch = 8;  // sequences in flight (KV-cache sequence slots)
  // When set: an admitted sequence restores the longest cached prefix of its prompt and prefills only the
  // rest; a sequence that finished its prompt stores the prompt's full blocks. Both copy synchronously
  // (between steps, so never under a step in flight).
  PrefixCache* prefix_cache = nullptr;
  // Threads that sample a step's sequences side by side, the caller included (0: the cores, at most 8).
  unsigned sample_threads = 0;
};

class Scheduler {
 public:
  Scheduler(gpu::Context& context, model::Model& model, const SchedulerOptions& options);
  ~Scheduler();

  // Queues a sequence; returns its id (results are indexed by it). Invalid requests are errors.
  Result<uint32_t> submit(SequenceRequest request);
  bool idle() const;
  // Records and submits one step (its first segment); nullopt when there is nothing to run.
  std::optional<gpu::Ticket> step_begin();
  // Once the previous segment's ticket is reached: records and submits the step's next segment, or returns
  // nullopt when the step is complete. Blocks on the expert reads of the segment, unless a caller that must
  // not block started them with step_start_reads() and polled step_reads_pending() until false. A failed
  // load ends every sequence of the step with finish_reason "error" and the loader's message in
  // SequenceResult::error; other sequences and later steps go on.
  std::optional<gpu::Ticket> step_next();
  // Before step_next(): starts the next segment's expert reads (Model::start_step_reads); true while they
  // are in flight. step_reads_pending() polls them without blocking.
  bool step_start_reads() { return model_.step_pending() && model_.start_step_reads(); }
  bool step_reads_pending() { return model_.step_reads_pending(); }
  // Consumes the step's logits (its ticket must be reached).
  void step_end();
  // When step_begin() found nothing to run although sequences wait: those that can never be admitted (they
  // need more KV blocks than the whole cache holds) finish with "error". Returns how many.
  size_t fail_unadmittable();
  // Runs steps until every submitted sequence finished, blocking on the GPU.
  void run();

  // Ends a sequence now (client gone, deadline): its KV blocks are free for the next step. A step in flight
  // that holds its tokens ignores them when it completes. finish_reason becomes "cancelled".
  void cancel(uint32_t id);
  bool done(uint32_t id) const;
  // Tokens generated so far (a finished sequence's are also in result()).
  std::span<const uint32_t> generated(uint32_t id) const;
  // Their log-probabilities so far (empty unless the request asked).
  std::span<const TokenLogprob> generated_logprobs(uint32_t id) const;

  const SequenceResult& result(uint32_t id) const;
  // Forgets a finished sequence (a server calls it once the result is delivered, so that memory stays
  // bounded); its id is never reused.
  void release(uint32_t id);

  uint64_t steps() const { return steps_; }
  size_t waiting() const;  // queued, not yet admitted
  size_t running() const;  // admitted, holding KV blocks
  // The step in flight or last run: tokens and sequences in it, and whether it was a prefill step.
  struct StepShape {
    uint32_t tokens = 0;
    uint32_t sequences = 0;
    bool prefill = false;
  };
  StepShape last_step() const { return last_step_; }

 private:
  struct Sequence;
  struct RowUse;
  struct Decision;
  void admit();
  void plan_prefill();
  void plan_decode();
  void finish(Sequence& s, const char* reason, std::string error = {});
  // Appends one token (with its log-probability when the request asked); false once the sequence is finished.
  bool emit(Sequence& s, uint32_t token, TokenLogprob* logprob);
  // What a sequence's logits rows of the step give (the tokens to append), decided from the sequence's sampler
  // and rows only, so that the step's sequences decide side by side; apply() then appends them in order.
  static void decide(Sequence& s, std::span<const float> rows, uint32_t n_rows, bool prefill_end, Decision& out);
  void apply(Sequence& s, const RowUse& use, Decision& d);
  Sequence& seq(uint32_t id) const;

  gpu::Context& context_;
  model::Model& model_;
  SchedulerOptions options_;
  std::unique_ptr<gpu::CommandList> cmd_;
  std::deque<uint32_t> waiting_;
  std::map<uint32_t, std::unique_ptr<Sequence>> seqs_;  // by id, in arrival order; released ones erased
  uint32_t next_id_ = 0;
  std::vector<int> slot_owner_;                  // KV sequence slot -> sequence id, -1 when free
  StepShape last_step_;
  bool last_was_prefill_ = false;
  uint64_t steps_ = 0;
  // The step in flight.
  std::vector<uint32_t> tokens_, seq_of_token_, positions_, logit_rows_;
  std::vector<RowUse> uses_;
  std::vector<float> logits_;
  std::vector<Decision> decisions_;                  // one per entry of uses_
  std::unique_ptr<experts::WorkerPool> sample_pool_;  // made by the first step with two sequences to sample
};

}  // namespace mach::engine
