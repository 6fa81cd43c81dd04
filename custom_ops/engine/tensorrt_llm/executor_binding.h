// Entry point of the TensorRT-LLM backend: the real executor behind
// ExecutorLike and the engine over it. Declared here without TensorRT-LLM
// types; defined in executor_binding.cc, built only when TENSORRT_LLM_ROOT is
// set (setup.py) and NOT compiled or run in CI (no GPU there).
#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_EXECUTOR_BINDING_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_EXECUTOR_BINDING_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "custom_ops/engine/engine.h"
#include "custom_ops/engine/tensorrt_llm/executor_like.h"
#include "custom_ops/engine/tensorrt_llm/tensorrt_llm_engine.h"
#include "custom_ops/engine/trie.h"

namespace tf_genrec {

struct TensorRtLlmExecutorOptions {
  std::string
      engine_dir;  // What trtllm-build wrote (rank0.engine, config.json).
  int max_beam_width = 1;  // As built (tools/build_engine.py records it).
  // Share KV blocks of common prompt prefixes across requests.
  bool enable_block_reuse = true;
  float kv_cache_free_gpu_memory_fraction = 0.9f;
};

absl::StatusOr<std::unique_ptr<ExecutorLike>> CreateTensorRtLlmExecutor(
    const TensorRtLlmExecutorOptions& options);

// The Engine the GenerationEngine resource holds for backend "tensorrt_llm".
absl::StatusOr<std::unique_ptr<Engine>> CreateTensorRtLlmEngine(
    const EngineConfig& config, SemanticIdTrie trie,
    const TensorRtLlmExecutorOptions& executor_options,
    const TensorRtLlmOptions& options);

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_EXECUTOR_BINDING_H_
