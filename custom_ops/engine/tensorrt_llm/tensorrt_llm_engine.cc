#include "custom_ops/engine/tensorrt_llm/tensorrt_llm_engine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "custom_ops/engine/tensorrt_llm/trie_logits_processor.h"

namespace tf_genrec {
namespace {

// Executors may start the extra beams of the first step at a large finite
// negative score rather than -inf; a cumulative score at or below this floor
// is such a filler beam, never a semantic ID (a real one sums L finite
// log-probs of float32 logits).
constexpr float kFillerScoreFloor = -1e10f;

absl::Status Cancelled(const char* why) {
  return absl::CancelledError(absl::StrCat("generation request ", why));
}

}  // namespace

absl::Status ValidateTensorRtLlmConfig(const EngineConfig& config,
                                       const TensorRtLlmOptions& options) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (config.sid_softmax != SidSoftmax::kTrie) {
    return absl::FailedPreconditionError(
        "the tensorrt_llm engine needs sid_softmax=\"trie\": TensorRT-LLM's "
        "beam search renormalises the logits processor's output over the "
        "tokens left finite (the trie children), so sid_softmax=\"level\" "
        "scores cannot be reproduced; export this model with --engine=cpu "
        "or --engine=tf");
  }
  if (config.max_beam_width > kTensorRtLlmMaxBeamWidth) {
    return absl::FailedPreconditionError(absl::StrCat(
        "max_beam_width=", config.max_beam_width,
        " exceeds TensorRT-LLM's limit of ", kTensorRtLlmMaxBeamWidth,
        " beams; export with a smaller max beam width or another engine"));
  }
  const int64_t sid_end =
      static_cast<int64_t>(config.sid_offset) +
      static_cast<int64_t>(config.num_levels) * config.codebook_size;
  if (options.end_id < 0 || options.end_id >= config.vocab_size ||
      (options.end_id >= config.sid_offset && options.end_id < sid_end)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "end_id=", options.end_id, " must be a token in [0, vocab_size=",
        config.vocab_size, ") outside the semantic-ID tokens [",
        config.sid_offset, ", ", sid_end, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TensorRtLlmEngine>> TensorRtLlmEngine::Create(
    const EngineConfig& config, SemanticIdTrie trie,
    std::unique_ptr<ExecutorLike> executor, const TensorRtLlmOptions& options) {
  if (absl::Status s = ValidateTensorRtLlmConfig(config, options); !s.ok()) {
    return s;
  }
  if (trie.num_levels() != config.num_levels ||
      trie.codebook_size() != config.codebook_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trie has num_levels=", trie.num_levels(),
        ", codebook_size=", trie.codebook_size(), "; the engine config has ",
        config.num_levels, ", ", config.codebook_size));
  }
  if (config.max_beam_width > executor->max_beam_width()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "max_beam_width=", config.max_beam_width,
        " exceeds the TensorRT-LLM engine's max beam width ",
        executor->max_beam_width(),
        "; rebuild it with `tf-genrec build_engine --max_beam_width=",
        config.max_beam_width, "`"));
  }
  return std::unique_ptr<TensorRtLlmEngine>(new TensorRtLlmEngine(
      config, std::move(trie), std::move(executor), options));
}

TensorRtLlmEngine::TensorRtLlmEngine(const EngineConfig& config,
                                     SemanticIdTrie trie,
                                     std::unique_ptr<ExecutorLike> executor,
                                     const TensorRtLlmOptions& options)
    : Engine(config),
      trie_(std::move(trie)),
      options_(options),
      executor_(std::move(executor)) {
  thread_ = std::thread([this] { Loop(); });
}

TensorRtLlmEngine::~TensorRtLlmEngine() {
  std::vector<DoneCallback> dropped;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (Pending& p : waiting_) dropped.push_back(std::move(p.done));
    stats_.requests_failed += waiting_.size();
    waiting_.clear();
    for (auto& [executor_id, running] : running_) {
      if (!running.cancelled) executor_->Cancel(executor_id);
      running.cancelled = true;
    }
  }
  for (DoneCallback& done : dropped) {
    done(Cancelled("cancelled: the engine was destroyed"));
  }
  thread_.join();
}

absl::StatusOr<RequestId> TensorRtLlmEngine::Enqueue(GenerationRequest request,
                                                     DoneCallback done) {
  if (absl::Status s = ValidateRequest(config(), request); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  if (stopping_) {
    return absl::UnavailableError("the tensorrt_llm engine is shutting down");
  }
  const int64_t queued = waiting_.size() + running_.size();
  if (queued >= config().max_queued_requests) {
    ++stats_.requests_rejected;
    return absl::ResourceExhaustedError(absl::StrCat(
        "generation engine queue is full: max_queued_requests=",
        config().max_queued_requests, " requests are waiting or running"));
  }
  const RequestId id = next_id_++;
  waiting_.push_back({id, std::move(request), std::move(done)});
  ++stats_.requests_enqueued;
  return id;
}

void TensorRtLlmEngine::Cancel(RequestId id) {
  DoneCallback done;
  {
    absl::MutexLock lock(&mu_);
    auto it = std::find_if(waiting_.begin(), waiting_.end(),
                           [id](const Pending& p) { return p.id == id; });
    if (it != waiting_.end()) {
      done = std::move(it->done);
      waiting_.erase(it);
      ++stats_.requests_failed;
    } else {
      for (auto& [executor_id, running] : running_) {
        if (running.id != id || running.cancelled) continue;
        // Answered when the executor's final response arrives.
        running.cancelled = true;
        executor_->Cancel(executor_id);
      }
    }
  }
  if (done) done(Cancelled("cancelled"));
}

EngineStats TensorRtLlmEngine::Stats() const {
  absl::MutexLock lock(&mu_);
  EngineStats stats = stats_;
  stats.queued = waiting_.size() + running_.size();
  return stats;
}

std::string TensorRtLlmEngine::DebugString() const {
  absl::MutexLock lock(&mu_);
  return absl::StrCat(
      "TensorRtLlmEngine(max_beam_width=", config().max_beam_width,
      ", group_width=", group_width_, ", waiting=", waiting_.size(),
      ", running=", running_.size(), ")");
}

bool TensorRtLlmEngine::HasWorkLocked() const {
  return stopping_ || !waiting_.empty() || !running_.empty();
}

void TensorRtLlmEngine::SubmitLocked() {
  if (group_width_ == 0) {
    if (waiting_.empty()) return;
    group_width_ = waiting_.front().request.beam_width;
  } else if (std::any_of(waiting_.begin(), waiting_.end(),
                         [this](const Pending& p) {
                           return p.request.beam_width != group_width_;
                         })) {
    return;  // Another width waits: let this group drain first.
  }
  std::vector<std::pair<DoneCallback, absl::Status>> failed;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (it->request.beam_width != group_width_) {
      ++it;
      continue;
    }
    const int prompt_len = it->request.prompt.size();
    ExecutorRequest request;
    request.beam_width = it->request.beam_width;
    request.max_new_tokens = config().num_levels;
    request.end_id = options_.end_id;
    request.prompt = std::move(it->request.prompt);
    auto processor =
        std::make_shared<TrieLogitsProcessor>(&trie_, config(), prompt_len);
    request.logits_processor =
        [processor](float* logits, int num_beams, int vocab_stride,
                    const std::vector<std::vector<int32_t>>& beam_tokens) {
          return processor->Apply(logits, num_beams, vocab_stride, beam_tokens);
        };
    absl::StatusOr<uint64_t> executor_id =
        executor_->Enqueue(std::move(request));
    if (executor_id.ok()) {
      running_[*executor_id] = {it->id, group_width_, std::move(it->done)};
    } else {
      ++stats_.requests_failed;
      failed.emplace_back(std::move(it->done), executor_id.status());
    }
    it = waiting_.erase(it);
  }
  stats_.max_step_requests =
      std::max<int64_t>(stats_.max_step_requests, running_.size());
  if (running_.empty()) group_width_ = 0;
  if (failed.empty()) return;
  // Callbacks run without the lock.
  mu_.Unlock();
  for (auto& [done, status] : failed) done(status);
  mu_.Lock();
}

void TensorRtLlmEngine::Loop() {
  absl::Time deadline = absl::InfiniteFuture();
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) {
        if (running_.empty()) break;
        if (deadline == absl::InfiniteFuture()) {
          deadline = absl::Now() + options_.shutdown_grace;
        }
        if (absl::Now() > deadline) break;
      } else {
        // Idle: sleep until a request arrives instead of polling.
        mu_.AwaitWithTimeout(
            absl::Condition(this, &TensorRtLlmEngine::HasWorkLocked),
            absl::Milliseconds(100));
        if (!stopping_) SubmitLocked();
        if (running_.empty()) continue;
      }
    }
    absl::StatusOr<std::vector<ExecutorResponse>> responses =
        executor_->AwaitResponses(options_.poll_interval);
    std::vector<std::pair<DoneCallback, absl::StatusOr<GenerationResult>>>
        answers;
    {
      absl::MutexLock lock(&mu_);
      if (!responses.ok()) {
        // The executor is unusable: every running request gets its error.
        for (auto& [executor_id, running] : running_) {
          answers.emplace_back(std::move(running.done), responses.status());
        }
        stats_.requests_failed += running_.size();
        running_.clear();
      } else {
        for (const ExecutorResponse& response : *responses) {
          auto it = running_.find(response.request_id);
          if (it == running_.end()) continue;
          if (response.error.empty() && !response.is_final) continue;
          Running running = std::move(it->second);
          running_.erase(it);
          absl::StatusOr<GenerationResult> result;
          if (running.cancelled) {
            result = Cancelled(stopping_ ? "cancelled: the engine was destroyed"
                                         : "cancelled");
          } else if (!response.error.empty()) {
            result = absl::InternalError(
                absl::StrCat("TensorRT-LLM executor: ", response.error));
          } else {
            result = ToResult(running.beam_width, response);
          }
          ++(result.ok() ? stats_.requests_completed : stats_.requests_failed);
          answers.emplace_back(std::move(running.done), std::move(result));
        }
      }
      if (running_.empty()) group_width_ = 0;
    }
    for (auto& [done, result] : answers) {
      done(std::move(result));
    }
  }
  executor_->Shutdown();
  std::vector<DoneCallback> abandoned;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [executor_id, running] : running_) {
      abandoned.push_back(std::move(running.done));
    }
    stats_.requests_failed += running_.size();
    running_.clear();
  }
  for (DoneCallback& done : abandoned) {
    done(
        Cancelled("cancelled: the engine was destroyed before the "
                  "executor answered"));
  }
}

GenerationResult TensorRtLlmEngine::ToResult(
    int beam_width, const ExecutorResponse& response) const {
  const int num_levels = config().num_levels;
  const int k = config().codebook_size;
  const TrieLogitsProcessor sids(&trie_, config(), /*prompt_len=*/0);
  std::vector<std::pair<float, int>> valid;  // (score, beam)
  const int beams = std::min<int>(
      {beam_width, static_cast<int>(response.output_tokens.size()),
       static_cast<int>(response.cum_log_probs.size())});
  for (int b = 0; b < beams; ++b) {
    const float score = response.cum_log_probs[b];
    const std::vector<int32_t>& tokens = response.output_tokens[b];
    if (!std::isfinite(score) || score <= kFillerScoreFloor ||
        static_cast<int>(tokens.size()) != num_levels ||
        sids.PrefixNode(tokens.data(), num_levels) < 0) {
      continue;
    }
    valid.emplace_back(score, b);
  }
  std::stable_sort(
      valid.begin(), valid.end(),
      [](const auto& a, const auto& b) { return a.first > b.first; });
  GenerationResult result;
  result.beam_width = beam_width;
  result.codes.assign(static_cast<size_t>(beam_width) * num_levels, -1);
  result.scores.assign(beam_width, -std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < valid.size(); ++i) {
    const std::vector<int32_t>& tokens =
        response.output_tokens[valid[i].second];
    for (int l = 0; l < num_levels; ++l) {
      result.codes[i * num_levels + l] =
          tokens[l] - config().sid_offset - l * k;
    }
    result.scores[i] = valid[i].first;
  }
  return result;
}

}  // namespace tf_genrec
