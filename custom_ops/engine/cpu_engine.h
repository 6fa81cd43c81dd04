// The CPU backend of the generation engine: a Qwen2 decoder computing in
// float32, its weights stored in float32 or bfloat16, whose matrix products
// go through OpenBLAS (scipy-openblas32, from PyPI), with a scheduler thread
// that merges concurrent requests into shared steps, their beams into shared
// products (in-flight batching; row_tiling.h keeps answers exact).
//
// Engine file (written by tf_genrec/generation/engine_file.py), little-endian:
//   "TFGRENG2", int32 weight_dtype (0 float32, 1 bfloat16), int32
//   num_layers, hidden, intermediate, num_heads, num_kv_heads, head_dim,
//   vocab_size, num_levels, codebook_size, sid_offset, num_sids, float32
//   rope_theta, rms_norm_eps, then the tensors in kernel layout [in, out]:
//   embed [V, H]; per layer ln1 [H], q [H, nH*D], q_bias, k [H, nKV*D],
//   k_bias, v [H, nKV*D], v_bias, o [nH*D, H], ln2 [H], gate [H, I],
//   up [H, I], down [I, H]; final norm [H]; the SID rows of the LM head
//   [L*K, H]; then int32 sids [num_sids, L]. The matrices (embed, q, k, v,
//   o, gate, up, down, LM head) are in weight_dtype (bfloat16: the upper 16
//   bits of the float32, rounded to nearest even); norms and biases are
//   float32. Version 1 ("TFGRENG1", no weight_dtype field) is float32 and
//   still loads.
#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_CPU_ENGINE_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_CPU_ENGINE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "custom_ops/engine/engine.h"

namespace tf_genrec {

// Reads `filename` and starts the engine's scheduler thread. The file's
// num_levels, codebook_size and sid_offset must equal the config's (errors
// name both values); config.vocab_size is taken from the file. The engine's
// pool of num_threads threads (0: one per core) runs a step's prefills and
// decode groups and, within each, blocks of its products' output columns and
// its kv heads; OpenBLAS is set single-threaded (process-wide). Measures
// the CPU's row tiling on the model's products first (about 1.5 s at the
// Qwen2-0.5B shape).
absl::StatusOr<std::unique_ptr<Engine>> CreateCpuEngine(
    EngineConfig config, const std::string& filename, int num_threads);

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_CPU_ENGINE_H_
