#include "custom_ops/engine/tensorrt_llm/engine_assets.h"

#include <fstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "custom_ops/engine/tensorrt_llm/tensorrt_llm_engine.h"
#include "custom_ops/engine/trie.h"

namespace tf_genrec {

absl::StatusOr<TensorRtLlmAssets> ReadTensorRtLlmAssets(const std::string& path,
                                                        int num_levels) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     " is missing: export the model with `tf-genrec export "
                     "--engine=tensorrt_llm --engine_dir=...`"));
  }
  auto bad = [&path](int line, const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " line ", line, ": ", what));
  };
  // The four header lines, in order, then the rows.
  const char* const keys[] = {"vocab_size", "end_id", "max_beam_width",
                              "num_sids"};
  int64_t values[4];
  std::string text;
  int line = 0;
  for (int i = 0; i < 4; ++i) {
    ++line;
    std::vector<std::string> fields;
    if (std::getline(in, text)) {
      fields = absl::StrSplit(text, ' ', absl::SkipEmpty());
    }
    if (fields.size() != 2 || fields[0] != keys[i] ||
        !absl::SimpleAtoi(fields[1], &values[i]) || values[i] < 0 ||
        values[i] > (int64_t{1} << 30)) {
      return bad(line,
                 absl::StrCat("expected \"", keys[i],
                              " <integer in [0, 2^30]>\", got \"", text, "\""));
    }
  }
  TensorRtLlmAssets assets;
  assets.vocab_size = static_cast<int>(values[0]);
  assets.end_id = static_cast<int32_t>(values[1]);
  assets.max_beam_width = static_cast<int>(values[2]);
  const int64_t num_sids = values[3];
  for (int64_t row = 0; row < num_sids; ++row) {
    ++line;
    if (!std::getline(in, text)) {
      return bad(line, absl::StrCat("file ends after ", row,
                                    " of num_sids=", num_sids, " rows"));
    }
    std::vector<std::string> fields =
        absl::StrSplit(text, ' ', absl::SkipEmpty());
    if (static_cast<int>(fields.size()) != num_levels) {
      return bad(line, absl::StrCat("has ", fields.size(),
                                    " codes, num_levels=", num_levels));
    }
    for (const std::string& field : fields) {
      int32_t code;
      if (!absl::SimpleAtoi(field, &code)) {
        return bad(line, absl::StrCat("code \"", field, "\" is not an int32"));
      }
      assets.sids.push_back(code);
    }
  }
  return assets;
}

absl::StatusOr<std::unique_ptr<Engine>> CreateTensorRtLlmEngineFromAssets(
    EngineConfig config, const std::string& path,
    const ExecutorFactory& make_executor) {
  absl::StatusOr<TensorRtLlmAssets> assets =
      ReadTensorRtLlmAssets(path, config.num_levels);
  if (!assets.ok()) return assets.status();
  config.vocab_size = assets->vocab_size;
  TensorRtLlmOptions options;
  options.end_id = assets->end_id;
  // Refuse what the backend cannot do before loading anything on the GPU.
  if (absl::Status s = ValidateTensorRtLlmConfig(config, options); !s.ok()) {
    return s;
  }
  absl::StatusOr<SemanticIdTrie> trie = SemanticIdTrie::FromCodes(
      assets->sids, config.num_levels, config.codebook_size);
  if (!trie.ok()) return trie.status();
  const size_t slash = path.find_last_of('/');
  absl::StatusOr<std::unique_ptr<ExecutorLike>> executor = make_executor(
      slash == std::string::npos ? "." : path.substr(0, slash), *assets);
  if (!executor.ok()) return executor.status();
  absl::StatusOr<std::unique_ptr<TensorRtLlmEngine>> engine =
      TensorRtLlmEngine::Create(config, *std::move(trie), *std::move(executor),
                                options);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<Engine>(*std::move(engine));
}

}  // namespace tf_genrec
