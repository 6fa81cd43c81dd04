#include "tests/cc/fake_executor.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace tf_genrec {

std::atomic<int> FakeExecutor::live_requests{0};

FakeExecutor::FakeExecutor(LogitsModel model, FakeExecutorOptions options)
    : model_(std::move(model)), options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

FakeExecutor::~FakeExecutor() { Shutdown(); }

absl::StatusOr<uint64_t> FakeExecutor::Enqueue(ExecutorRequest request) {
  if (options_.fail_enqueue) {
    return absl::InternalError("fake executor: enqueueRequest failed");
  }
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t id = next_id_++;
  Active a;
  a.beams.assign(request.beam_width, request.prompt);
  a.scores.assign(request.beam_width, -1e20f);
  a.scores[0] = 0.0f;
  a.request = std::move(request);
  active_.emplace(id, std::move(a));
  ++live_requests;
  work_cv_.notify_one();
  return id;
}

absl::StatusOr<std::vector<ExecutorResponse>> FakeExecutor::AwaitResponses(
    absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  response_cv_.wait_for(lock, absl::ToChronoMicroseconds(timeout),
                        [this] { return !responses_.empty(); });
  std::vector<ExecutorResponse> out(responses_.begin(), responses_.end());
  responses_.clear();
  return out;
}

void FakeExecutor::Cancel(uint64_t request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = active_.find(request_id);
  if (it != active_.end()) it->second.cancelled = true;
}

void FakeExecutor::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
    live_requests -= active_.size();
    active_.clear();
    work_cv_.notify_all();
  }
  thread_.join();
}

ExecutorResponse FakeExecutor::Final(uint64_t id, const Active& a) const {
  ExecutorResponse r;
  r.request_id = id;
  r.is_final = true;
  const size_t prompt_len = a.request.prompt.size();
  for (size_t b = 0; b < a.beams.size(); ++b) {
    r.output_tokens.emplace_back(a.beams[b].begin() + prompt_len,
                                 a.beams[b].end());
  }
  r.cum_log_probs = a.scores;
  return r;
}

bool FakeExecutor::Step(Active& a, std::string* error) {
  const int width = a.request.beam_width;
  const int stride = options_.vocab_size + options_.vocab_padding;
  std::vector<float> logits(static_cast<size_t>(width) * stride, 7.0f);
  for (int b = 0; b < width; ++b) model_(a.beams[b], &logits[b * stride]);
  absl::Status s =
      a.request.logits_processor(logits.data(), width, stride, a.beams);
  if (!s.ok()) {
    *error = std::string(s.message());
    return false;
  }
  struct Cand {
    float score;
    int beam;
    int token;
  };
  std::vector<Cand> cands;
  for (int b = 0; b < width; ++b) {
    const float* row = &logits[b * stride];
    float m = -std::numeric_limits<float>::infinity();
    for (int v = 0; v < stride; ++v) m = std::max(m, row[v]);
    double sum = 0;
    for (int v = 0; v < stride; ++v) sum += std::exp(row[v] - m);
    const float log_sum = std::log(static_cast<float>(sum));
    for (int v = 0; v < stride; ++v) {
      cands.push_back({a.scores[b] + ((row[v] - m) - log_sum), b, v});
    }
  }
  std::partial_sort(cands.begin(), cands.begin() + width, cands.end(),
                    [](const Cand& x, const Cand& y) {
                      if (x.score != y.score) return x.score > y.score;
                      if (x.beam != y.beam) return x.beam < y.beam;
                      return x.token < y.token;
                    });
  std::vector<std::vector<int32_t>> beams(width);
  for (int i = 0; i < width; ++i) {
    beams[i] = a.beams[cands[i].beam];
    beams[i].push_back(cands[i].token);
    a.scores[i] = cands[i].score;
  }
  a.beams = std::move(beams);
  return true;
}

void FakeExecutor::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    work_cv_.wait(lock, [this] { return stop_ || !active_.empty(); });
    if (stop_) return;
    std::vector<int> widths;
    for (auto& [id, a] : active_) widths.push_back(a.request.beam_width);
    if (std::count(widths.begin(), widths.end(), widths[0]) !=
        static_cast<long>(widths.size())) {
      ++mixed_width_iterations_;
    }
    max_requests_ = std::max<int>(max_requests_, active_.size());
    for (auto it = active_.begin(); it != active_.end();) {
      Active& a = it->second;
      ExecutorResponse r;
      bool done = a.cancelled;
      std::string error;
      if (!done && !a.request.prompt.empty() &&
          a.request.prompt[0] == options_.fail_token) {
        error = "fake executor: request failed";
      }
      if (!done && error.empty() && !Step(a, &error)) done = true;
      if (!error.empty()) {
        r.request_id = it->first;
        r.error = error;
        r.is_final = true;
        done = true;
      } else if (done || a.beams[0].size() - a.request.prompt.size() ==
                             static_cast<size_t>(a.request.max_new_tokens)) {
        r = Final(it->first, a);
        done = true;
      }
      if (done) {
        responses_.push_back(std::move(r));
        it = active_.erase(it);
        --live_requests;
      } else {
        ++it;
      }
    }
    response_cv_.notify_all();
    if (options_.step_delay.count() > 0) {
      lock.unlock();
      std::this_thread::sleep_for(options_.step_delay);
      lock.lock();
    }
  }
}

}  // namespace tf_genrec
