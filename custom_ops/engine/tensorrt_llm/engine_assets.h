// What a tensorrt_llm SavedModel carries in its assets, and the engine made
// from it. The export (tf_genrec/generation/tensorrt_llm.py) copies the files
// of the engine directory trtllm-build wrote into the assets directory (TF
// assets are flat) and adds tf_genrec_tensorrt_llm.txt, the init op's asset,
// a text file of "key value" lines
//   vocab_size <V>        the checkpoint's vocabulary (prompt token bound)
//   end_id <token>        a non-SID token (the trie processor masks it)
//   max_beam_width <W>    what the engine was built for
//   num_sids <N>          then N lines of L codes each: the trie
// so the engine needs nothing but that file and the files beside it.
#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_ENGINE_ASSETS_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_ENGINE_ASSETS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "custom_ops/engine/engine.h"
#include "custom_ops/engine/tensorrt_llm/executor_like.h"

namespace tf_genrec {

struct TensorRtLlmAssets {
  int vocab_size = 0;
  int32_t end_id = 0;
  int max_beam_width = 0;
  std::vector<int32_t> sids;  // [num_sids, num_levels] row-major.
};

// Reads the file; INVALID_ARGUMENT naming the line and field of anything
// malformed (a row must have num_levels codes).
absl::StatusOr<TensorRtLlmAssets> ReadTensorRtLlmAssets(const std::string& path,
                                                        int num_levels);

// Makes the executor over the engine in `dir`, the file's directory (the
// binding's real executor, or a test's fake).
using ExecutorFactory =
    std::function<absl::StatusOr<std::unique_ptr<ExecutorLike>>(
        const std::string& dir, const TensorRtLlmAssets& assets)>;

// The "tensorrt_llm" backend's EngineFactory body: reads the file at `path`,
// refuses what the backend cannot serve exactly before making the executor,
// then starts the engine over it.
absl::StatusOr<std::unique_ptr<Engine>> CreateTensorRtLlmEngineFromAssets(
    EngineConfig config, const std::string& path,
    const ExecutorFactory& make_executor);

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_ENGINE_ASSETS_H_
