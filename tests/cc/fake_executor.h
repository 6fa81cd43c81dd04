// A CPU stand-in for TensorRT-LLM's executor with its beam-search semantics,
// for testing the backend without a GPU: each iteration advances every active
// request by one token (all active requests must share one beam width, as the
// real executor requires; a mix is recorded as a violation). Per request and
// step: the model's logits for every beam's history, the request's logits
// processor, log_softmax over the padded vocabulary, then the best beam_width
// continuations over all beams (ties: lower beam, then lower token). The extra
// beams of the first step start at -1e20, not -inf.
#ifndef TF_GENREC_TESTS_CC_FAKE_EXECUTOR_H_
#define TF_GENREC_TESTS_CC_FAKE_EXECUTOR_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "custom_ops/engine/tensorrt_llm/executor_like.h"

namespace tf_genrec {

// Logits of the next token after `history` (prompt + generated), written to
// logits[0, vocab_size).
using LogitsModel =
    std::function<void(const std::vector<int32_t>& history, float* logits)>;

struct FakeExecutorOptions {
  int max_beam_width = 256;
  int vocab_size = 0;
  int vocab_padding = 3;  // Padded vocabulary columns (the processor masks).
  std::chrono::microseconds step_delay{0};
  // Requests whose prompt starts with this token fail with an error response.
  int32_t fail_token = -1;
  bool fail_enqueue = false;
};

class FakeExecutor : public ExecutorLike {
 public:
  FakeExecutor(LogitsModel model, FakeExecutorOptions options);
  ~FakeExecutor() override;

  int max_beam_width() const override { return options_.max_beam_width; }
  absl::StatusOr<uint64_t> Enqueue(ExecutorRequest request) override;
  absl::StatusOr<std::vector<ExecutorResponse>> AwaitResponses(
      absl::Duration timeout) override;
  void Cancel(uint64_t request_id) override;
  void Shutdown() override;

  // Iterations that held requests of more than one beam width.
  int mixed_width_iterations() const { return mixed_width_iterations_; }
  int max_requests_per_iteration() const { return max_requests_; }
  // ExecutorRequests alive in any FakeExecutor (leak check).
  static std::atomic<int> live_requests;

 private:
  struct Active {
    ExecutorRequest request;
    std::vector<std::vector<int32_t>> beams;  // prompt + generated
    std::vector<float> scores;
    bool cancelled = false;
  };
  void Loop();
  // Advances one request one token; false on a processor error.
  bool Step(Active& a, std::string* error);
  ExecutorResponse Final(uint64_t id, const Active& a) const;

  const LogitsModel model_;
  const FakeExecutorOptions options_;
  std::mutex mu_;
  std::condition_variable work_cv_, response_cv_;
  bool stop_ = false;
  uint64_t next_id_ = 100;
  std::map<uint64_t, Active> active_;
  std::deque<ExecutorResponse> responses_;
  std::atomic<int> mixed_width_iterations_{0};
  std::atomic<int> max_requests_{0};
  std::thread thread_;
};

}  // namespace tf_genrec

#endif  // TF_GENREC_TESTS_CC_FAKE_EXECUTOR_H_
