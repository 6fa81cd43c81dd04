// The real executor behind ExecutorLike, declared without TensorRT-LLM
// types; defined in executor_binding.cc, which also registers the
// "tensorrt_llm" engine backend (engine_registry.h) when its library
// (_tf_genrec_tensorrt_llm_ops.so) is loaded. Built only when
// TENSORRT_LLM_ROOT is set (setup.py); NOT compiled or run in CI (no GPU).
#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_EXECUTOR_BINDING_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_EXECUTOR_BINDING_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "custom_ops/engine/tensorrt_llm/executor_like.h"

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

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_EXECUTOR_BINDING_H_
