// The TensorRT-LLM backend of the generation Engine (engine.h), written
// against ExecutorLike so that all of it but the binding is tested on CPU.
//
// Requests wait in a FIFO; the executor runs one beam width at a time (its
// batches cannot mix widths), so the scheduler submits every waiting request
// of the oldest request's width, lets that group drain, then moves to the
// next width. Each request is its own beam search with its own trie logits
// processor, so its answer never depends on its batch. One thread submits,
// polls responses and answers callbacks.
#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_TENSORRT_LLM_ENGINE_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_TENSORRT_LLM_ENGINE_H_

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "custom_ops/engine/engine.h"
#include "custom_ops/engine/tensorrt_llm/executor_like.h"
#include "custom_ops/engine/trie.h"

namespace tf_genrec {

// TensorRT-LLM's largest beam width; W_max above it is refused.
inline constexpr int kTensorRtLlmMaxBeamWidth = 256;

struct TensorRtLlmOptions {
  // A token outside the semantic-ID range (the tokenizer's EOS); the trie
  // processor masks it, so no beam ends early.
  int32_t end_id = 0;
  // How long one poll waits for responses (bounds the submit latency).
  absl::Duration poll_interval = absl::Milliseconds(1);
  // On destruction, how long outstanding requests may take to drain after
  // being cancelled before the executor is shut down.
  absl::Duration shutdown_grace = absl::Seconds(10);
};

// FAILED_PRECONDITION for what this backend cannot do exactly: sid_softmax
// "level", max_beam_width above kTensorRtLlmMaxBeamWidth or the executor's
// own limit; INVALID_ARGUMENT for a bad config, trie or end_id.
absl::Status ValidateTensorRtLlmConfig(const EngineConfig& config,
                                       const TensorRtLlmOptions& options);

class TensorRtLlmEngine : public Engine {
 public:
  static absl::StatusOr<std::unique_ptr<TensorRtLlmEngine>> Create(
      const EngineConfig& config, SemanticIdTrie trie,
      std::unique_ptr<ExecutorLike> executor,
      const TensorRtLlmOptions& options = {});
  ~TensorRtLlmEngine() override;

  absl::StatusOr<RequestId> Enqueue(GenerationRequest request,
                                    DoneCallback done) override;
  void Cancel(RequestId id) override;
  EngineStats Stats() const override;
  std::string DebugString() const override;

 private:
  struct Pending {
    RequestId id;
    GenerationRequest request;
    DoneCallback done;
  };
  struct Running {
    RequestId id;
    int beam_width;
    DoneCallback done;
    bool cancelled = false;
  };

  TensorRtLlmEngine(const EngineConfig& config, SemanticIdTrie trie,
                    std::unique_ptr<ExecutorLike> executor,
                    const TensorRtLlmOptions& options);
  void Loop();
  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Submits the waiting requests of the current width group (a new group
  // starts with the oldest request once the executor is idle).
  void SubmitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The result of a final response: valid SIDs best first, -1/-inf after.
  GenerationResult ToResult(int beam_width,
                            const ExecutorResponse& response) const;

  const SemanticIdTrie trie_;
  const TensorRtLlmOptions options_;
  const std::unique_ptr<ExecutorLike> executor_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  RequestId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int group_width_ ABSL_GUARDED_BY(mu_) = 0;  // 0: no group running.
  std::deque<Pending> waiting_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Running> running_ ABSL_GUARDED_BY(mu_);  // executor id
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_TENSORRT_LLM_ENGINE_H_
