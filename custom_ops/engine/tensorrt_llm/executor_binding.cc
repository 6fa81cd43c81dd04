// The binding of ExecutorLike to tensorrt_llm::executor::Executor of
// TensorRT-LLM 1.2.x (the last line with the C++ Executor), the only file
// that includes TensorRT-LLM headers.
//
// NOT compiled or run in CI: there is no GPU or TensorRT-LLM there. It is
// built by `TENSORRT_LLM_ROOT=... python setup.py build_ext --inplace` and
// exercised on a GPU machine by tools/check_tensorrt_llm.sh. Everything it
// delegates to is tested in CI through tests/cc/fake_executor.h.
#include "custom_ops/engine/tensorrt_llm/executor_binding.h"

#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>
#include <utility>

#include "absl/strings/str_cat.h"
#include "custom_ops/engine/engine_registry.h"
#include "custom_ops/engine/tensorrt_llm/engine_assets.h"
#include "tensorrt_llm/executor/executor.h"
#include "tensorrt_llm/runtime/cudaStream.h"

namespace tf_genrec {
namespace {

namespace tle = tensorrt_llm::executor;

absl::Status ExecutorError(const char* call, const std::exception& e) {
  return absl::InternalError(
      absl::StrCat("TensorRT-LLM executor ", call, ": ", e.what()));
}

// The per-request post-processor: the step's logits [beams, vocab] live on
// the GPU; they are rewritten on the host by the trie processor (a few
// hundred KB per beam at Qwen2's vocabulary) and copied back on the
// executor's stream.
tle::LogitsPostProcessor HostLogitsProcessor(StepLogitsProcessor processor) {
  return [processor = std::move(processor)](
             tle::IdType, tle::Tensor& logits, tle::BeamTokens const& tokens,
             tle::StreamPtr const& stream, std::optional<tle::IdType>) {
    if (logits.getDataType() != tle::DataType::kFP32) {
      throw std::runtime_error(
          "trie logits processor needs float32 logits: build the engine with "
          "`tf-genrec build_engine` (--logits_dtype float32)");
    }
    const tle::Shape shape = logits.getShape();
    const int vocab_stride = static_cast<int>(shape[shape.size() - 1]);
    const int num_beams = static_cast<int>(logits.getSize() / vocab_stride);
    tle::Tensor host = logits.copyToCpu(stream);
    stream->synchronize();
    absl::Status status = processor(static_cast<float*>(host.getData()),
                                    num_beams, vocab_stride, tokens);
    if (!status.ok()) throw std::runtime_error(std::string(status.message()));
    logits.setFrom(host, stream);
    stream->synchronize();  // `host` must outlive the copy.
  };
}

class TrtExecutor : public ExecutorLike {
 public:
  TrtExecutor(std::unique_ptr<tle::Executor> executor, int max_beam_width)
      : executor_(std::move(executor)), max_beam_width_(max_beam_width) {}
  ~TrtExecutor() override { Shutdown(); }

  int max_beam_width() const override { return max_beam_width_; }

  absl::StatusOr<uint64_t> Enqueue(ExecutorRequest request) override {
    tle::SamplingConfig sampling(request.beam_width);
    sampling.setLengthPenalty(0.0f);  // Rank by the plain cumulative log-prob.
    tle::OutputConfig output(/*returnLogProbs=*/true);
    output.excludeInputFromOutput = true;
    tle::Request trt_request(
        tle::VecTokens(request.prompt.begin(), request.prompt.end()),
        request.max_new_tokens, /*streaming=*/false, sampling, output,
        request.end_id);
    trt_request.setLogitsPostProcessor(
        HostLogitsProcessor(std::move(request.logits_processor)));
    try {
      return executor_->enqueueRequest(trt_request);
    } catch (const std::exception& e) {
      return ExecutorError("enqueueRequest", e);
    }
  }

  absl::StatusOr<std::vector<ExecutorResponse>> AwaitResponses(
      absl::Duration timeout) override {
    std::vector<tle::Response> responses;
    try {
      responses =
          executor_->awaitResponses(absl::ToChronoMilliseconds(timeout));
    } catch (const std::exception& e) {
      return ExecutorError("awaitResponses", e);
    }
    std::vector<ExecutorResponse> out;
    out.reserve(responses.size());
    for (const tle::Response& response : responses) {
      ExecutorResponse& r = out.emplace_back();
      r.request_id = response.getRequestId();
      if (response.hasError()) {
        r.error = response.getErrorMsg();
        r.is_final = true;
        continue;
      }
      const tle::Result& result = response.getResult();
      r.is_final = result.isFinal;
      r.output_tokens.assign(result.outputTokenIds.begin(),
                             result.outputTokenIds.end());
      if (result.cumLogProbs) r.cum_log_probs = *result.cumLogProbs;
    }
    return out;
  }

  void Cancel(uint64_t request_id) override {
    try {
      executor_->cancelRequest(request_id);
    } catch (const std::exception&) {
      // Already finished: its final response is on its way.
    }
  }

  void Shutdown() override {
    if (shut_down_) return;
    shut_down_ = true;
    executor_->shutdown();
  }

 private:
  std::unique_ptr<tle::Executor> executor_;
  const int max_beam_width_;
  bool shut_down_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ExecutorLike>> CreateTensorRtLlmExecutor(
    const TensorRtLlmExecutorOptions& options) {
  tle::KvCacheConfig kv_cache(options.enable_block_reuse);
  kv_cache.setFreeGpuMemoryFraction(options.kv_cache_free_gpu_memory_fraction);
  tle::ExecutorConfig config(options.max_beam_width, tle::SchedulerConfig(),
                             kv_cache);
  // Cumulative log-probs as plain sums, the scores the op returns.
  config.setNormalizeLogProbs(false);
  // Per-request processors run on the one rank that holds the request.
  config.setLogitsPostProcessorConfig(tle::LogitsPostProcessorConfig(
      std::nullopt, std::nullopt, /*replicate=*/false));
  try {
    auto executor = std::make_unique<tle::Executor>(
        options.engine_dir, tle::ModelType::kDECODER_ONLY, config);
    return std::unique_ptr<ExecutorLike>(
        new TrtExecutor(std::move(executor), options.max_beam_width));
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load the TensorRT-LLM engine in ",
                     options.engine_dir, ": ", e.what()));
  }
}

// Loading this library adds the backend to the GenerationEngine resource.
const bool kRegistered = RegisterEngineBackend(
    "tensorrt_llm",
    [](const EngineConfig& config, const std::string& path, int) {
      return CreateTensorRtLlmEngineFromAssets(
          config, path,
          [](const std::string& engine_dir, const TensorRtLlmAssets& assets) {
            TensorRtLlmExecutorOptions options;
            options.engine_dir = engine_dir;
            options.max_beam_width = assets.max_beam_width;
            return CreateTensorRtLlmExecutor(options);
          });
    });

}  // namespace tf_genrec
