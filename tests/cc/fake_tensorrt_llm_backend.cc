// A stand-in for _tf_genrec_tensorrt_llm_ops.so in tests: registers the
// "tensorrt_llm" engine backend exactly as executor_binding.cc does (same
// assets, same CreateTensorRtLlmEngineFromAssets), but over FakeExecutor
// instead of TensorRT-LLM, so the real GenrecGenerate op and a real
// SavedModel run the backend end to end without a GPU.
//
// Its model, which tests/test_engine_tensorrt_llm.py recomputes in numpy: the
// logit of token v after history h is 3 * sin(0.37 * h.back() + 1.13 * v).
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "custom_ops/engine/engine_registry.h"
#include "custom_ops/engine/tensorrt_llm/engine_assets.h"
#include "tests/cc/fake_executor.h"

namespace tf_genrec {
namespace {

const bool kRegistered = RegisterEngineBackend(
    "tensorrt_llm",
    [](const EngineConfig& config, const std::string& path, int) {
      return CreateTensorRtLlmEngineFromAssets(
          config, path,
          [](const std::string&, const TensorRtLlmAssets& assets)
              -> absl::StatusOr<std::unique_ptr<ExecutorLike>> {
            FakeExecutorOptions options;
            options.max_beam_width = assets.max_beam_width;
            options.vocab_size = assets.vocab_size;
            const int vocab = assets.vocab_size;
            return std::make_unique<FakeExecutor>(
                [vocab](const std::vector<int32_t>& history, float* logits) {
                  const double last = history.back();
                  for (int v = 0; v < vocab; ++v) {
                    logits[v] = static_cast<float>(
                        3.0 * std::sin(0.37 * last + 1.13 * v));
                  }
                },
                options);
          });
    });

}  // namespace
}  // namespace tf_genrec
