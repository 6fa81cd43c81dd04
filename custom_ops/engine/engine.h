// The generation engine behind the GenrecGenerate op: one interface, several
// backends (the CPU engine here, TensorRT-LLM next), selected at export.
//
// A request is one prompt row (unpadded tokens) with its own beam width; the
// engine answers through a callback with the row's top beam_width semantic
// IDs, best first, exactly as a beam search of that width alone would
// (never dependent on what it was batched with). Backends own their threads;
// callbacks run on an engine thread and must not block.
#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_ENGINE_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_ENGINE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tf_genrec {

// How a level's code scores are normalised; fixed by training
// (tf_genrec/generation/beam_search.py): "level" = log_softmax over the
// level's K codes, then non-children excluded; "trie" = log_softmax over the
// beam prefix's trie children only.
enum class SidSoftmax { kLevel, kTrie };

absl::StatusOr<SidSoftmax> ParseSidSoftmax(const std::string& name);

// Fixed when a model version is exported; validated once by Validate().
struct EngineConfig {
  int num_levels = 0;      // L, codes per semantic ID.
  int codebook_size = 0;   // K, codes per level.
  int sid_offset = 0;      // Token of code c at level l: sid_offset + l*K + c.
  int vocab_size = 0;      // Prompt tokens must lie in [0, vocab_size).
  int max_beam_width = 0;  // W_max, in [1, 1024].
  int max_prompt_len = 0;  // Longest unpadded prompt accepted.
  SidSoftmax sid_softmax = SidSoftmax::kLevel;
  // Requests waiting or running at once; one more is RESOURCE_EXHAUSTED.
  int max_queued_requests = 1024;
  // Tokens one scheduler step may compute (prompt tokens of the requests it
  // prefills + one per live beam); a request is admitted at a step boundary
  // only while the step stays within it (a lone request always runs).
  int max_step_tokens = 8192;
  // Prefix K/V cache across requests (prefix_cache.h): capacity in bytes, 0
  // off; prompts are matched in blocks of prefix_block_tokens tokens.
  int64_t prefix_cache_bytes = 0;
  int prefix_block_tokens = 16;

  absl::Status Validate() const;
};

struct EngineStats {
  int64_t requests_enqueued = 0;
  int64_t requests_completed = 0;  // Answered OK.
  int64_t requests_failed = 0;     // Answered with an error or cancelled.
  int64_t requests_rejected = 0;   // Refused by Enqueue (e.g. queue full).
  int64_t steps = 0;               // Scheduler steps (one forward each).
  int64_t step_tokens = 0;         // Tokens computed over all steps.
  int64_t max_step_requests = 0;   // Most requests merged into one step.
  int64_t queued = 0;              // Waiting or running now.
  // The prefix cache's counters (PrefixCacheStats); 0 when it is off.
  int64_t prefix_cache_hits = 0;
  int64_t prefix_cache_misses = 0;
  int64_t prefix_cache_hit_tokens = 0;
  int64_t prefix_cache_evictions = 0;
  int64_t prefix_cache_bytes = 0;
  // Merged steps (CPU engine, row_tiling.h): the measured kernel tile, 0
  // when rows of different requests never share a product; and the padding
  // rows merged products computed to fill their tiles.
  int64_t row_tile = 0;
  int64_t padding_rows = 0;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;  // Unpadded prompt tokens.
  int beam_width = 1;           // In [1, max_beam_width].
};

struct GenerationResult {
  int beam_width = 0;
  std::vector<int32_t> codes;  // [beam_width, L] best first; -1 if invalid.
  std::vector<float> scores;   // [beam_width] log-probs; -inf if invalid.
};

// Called exactly once per accepted request: the result, or the error
// (CANCELLED after Cancel() or engine destruction).
using DoneCallback = std::function<void(absl::StatusOr<GenerationResult>)>;
using RequestId = uint64_t;

// INVALID_ARGUMENT naming the field, the value and the limit.
absl::Status ValidateRequest(const EngineConfig& config,
                             const GenerationRequest& request);

class Engine {
 public:
  explicit Engine(const EngineConfig& config) : config_(config) {}
  // Backends cancel what is outstanding (callbacks get CANCELLED) and join
  // their threads before returning.
  virtual ~Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues a request. Errors are returned (and `done` is not
  // called): INVALID_ARGUMENT, RESOURCE_EXHAUSTED naming max_queued_requests.
  virtual absl::StatusOr<RequestId> Enqueue(GenerationRequest request,
                                            DoneCallback done) = 0;
  // Best effort: a request still queued or running is answered CANCELLED at
  // the next step boundary; an unknown or finished id is ignored.
  virtual void Cancel(RequestId id) = 0;
  virtual EngineStats Stats() const = 0;
  virtual std::string DebugString() const = 0;

  const EngineConfig& config() const { return config_; }

 private:
  const EngineConfig config_;
};

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_ENGINE_H_
