#include "custom_ops/engine/engine_registry.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace tf_genrec {
namespace {

struct Registry {
  absl::Mutex mu;
  std::map<std::string, EngineFactory> factories ABSL_GUARDED_BY(mu);
};

// Libraries register from static initialisers, in any order, and engines are
// created until the process exits: hence a leaked function-local singleton.
Registry& GetRegistry() {
  static Registry* registry = new Registry;
  return *registry;
}

}  // namespace

bool RegisterEngineBackend(const std::string& name, EngineFactory factory) {
  Registry& registry = GetRegistry();
  absl::MutexLock lock(&registry.mu);
  registry.factories[name] = std::move(factory);
  return true;
}

absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(
    const std::string& name, const EngineConfig& config,
    const std::string& path, int num_threads, const std::string& missing_hint) {
  EngineFactory factory;
  {
    Registry& registry = GetRegistry();
    absl::MutexLock lock(&registry.mu);
    auto it = registry.factories.find(name);
    if (it == registry.factories.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "engine backend \"", name, "\" is not registered: ", missing_hint));
    }
    factory = it->second;
  }
  // Outside the lock: creating an engine may take long (loading weights).
  return factory(config, path, num_threads);
}

}  // namespace tf_genrec
