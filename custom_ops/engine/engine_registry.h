// Engine backends by name, so that an op library other than the default one
// can add a backend to the GenrecGenerationEngine resource: the TensorRT-LLM
// library (_tf_genrec_tensorrt_llm_ops.so) registers "tensorrt_llm" when it
// is loaded, and the default library never depends on TensorRT-LLM.
#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_ENGINE_REGISTRY_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_ENGINE_REGISTRY_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "custom_ops/engine/engine.h"

namespace tf_genrec {

// Creates a started engine from the SavedModel asset `path` (a file or a
// directory, as the backend's export wrote it).
using EngineFactory = std::function<absl::StatusOr<std::unique_ptr<Engine>>(
    const EngineConfig& config, const std::string& path, int num_threads)>;

// Registers `factory` under `name`, replacing an earlier one; returns true so
// a static initialiser can call it.
bool RegisterEngineBackend(const std::string& name, EngineFactory factory);

// The engine of backend `name`. FAILED_PRECONDITION if no loaded library
// registered it; `missing_hint` (e.g. which library to load) ends the message.
absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(
    const std::string& name, const EngineConfig& config,
    const std::string& path, int num_threads, const std::string& missing_hint);

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_ENGINE_REGISTRY_H_
