// The few executor operations the TensorRT-LLM backend needs, as plain C++
// types, so that everything except the binding (executor_binding.cc, the only
// file including TensorRT-LLM headers) compiles and is tested without a GPU.
// Semantics follow tensorrt_llm::executor::Executor of TensorRT-LLM 1.2.x.
#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_EXECUTOR_LIKE_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_EXECUTOR_LIKE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tf_genrec {

// Rewrites one decode step's logits of one request in place.
// logits: [num_beams, vocab_stride] float32 on the host; beam_tokens[b]: beam
// b's tokens so far (prompt followed by the tokens generated for it, as the
// executor's per-beam token lists are). A non-OK status fails the request.
using StepLogitsProcessor = std::function<absl::Status(
    float* logits, int num_beams, int vocab_stride,
    const std::vector<std::vector<int32_t>>& beam_tokens)>;

struct ExecutorRequest {
  std::vector<int32_t> prompt;  // Unpadded.
  int beam_width = 1;
  int max_new_tokens = 1;  // Exactly this many: end_id is never allowed.
  int32_t end_id = 0;
  StepLogitsProcessor logits_processor;
};

struct ExecutorResponse {
  uint64_t request_id = 0;
  std::string error;  // Non-empty: the request failed with this message.
  bool is_final = false;
  // [beam_width][generated tokens] (prompt excluded) and their cumulative
  // log-probs, in the executor's order (best first).
  std::vector<std::vector<int32_t>> output_tokens;
  std::vector<float> cum_log_probs;
};

class ExecutorLike {
 public:
  virtual ~ExecutorLike() = default;
  // The largest beam width the engine was built for.
  virtual int max_beam_width() const = 0;
  virtual absl::StatusOr<uint64_t> Enqueue(ExecutorRequest request) = 0;
  // Responses ready within `timeout` (possibly none).
  virtual absl::StatusOr<std::vector<ExecutorResponse>> AwaitResponses(
      absl::Duration timeout) = 0;
  // The request then ends with a final response (its partial result).
  virtual void Cancel(uint64_t request_id) = 0;
  // Stops the executor; no response follows.
  virtual void Shutdown() = 0;
};

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_EXECUTOR_LIKE_H_
