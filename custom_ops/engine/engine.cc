#include "custom_ops/engine/engine.h"

#include "absl/strings/str_cat.h"

namespace tf_genrec {

absl::StatusOr<SidSoftmax> ParseSidSoftmax(const std::string& name) {
  if (name == "level") return SidSoftmax::kLevel;
  if (name == "trie") return SidSoftmax::kTrie;
  return absl::InvalidArgumentError(absl::StrCat(
      "sid_softmax must be \"level\" or \"trie\", got \"", name, "\""));
}

absl::Status EngineConfig::Validate() const {
  auto bad = [](const char* field, int64_t value, const std::string& limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("engine config: ", field, "=", value, " must be ", limit));
  };
  if (num_levels < 1) return bad("num_levels", num_levels, ">= 1");
  if (codebook_size < 1) return bad("codebook_size", codebook_size, ">= 1");
  if (max_beam_width < 1 || max_beam_width > 1024) {
    return bad("max_beam_width", max_beam_width, "in [1, 1024]");
  }
  if (max_prompt_len < 1) return bad("max_prompt_len", max_prompt_len, ">= 1");
  const int64_t sid_end = static_cast<int64_t>(sid_offset) +
                          static_cast<int64_t>(num_levels) * codebook_size;
  if (sid_offset < 0 || sid_end > vocab_size) {
    return bad("sid_offset", sid_offset,
               absl::StrCat(">= 0 with sid_offset + num_levels * "
                            "codebook_size <= vocab_size=",
                            vocab_size));
  }
  if (max_queued_requests < 1) {
    return bad("max_queued_requests", max_queued_requests, ">= 1");
  }
  if (max_step_tokens < 1)
    return bad("max_step_tokens", max_step_tokens, ">= 1");
  // The capacity's lower bound depends on the model (prefix_cache.h).
  if (prefix_cache_bytes < 0) {
    return bad("prefix_cache_bytes", prefix_cache_bytes, ">= 0 (0: off)");
  }
  // The block size matters only with the cache on; unchecked against the
  // prompt length when off, so the default fits engines of short prompts.
  if (prefix_block_tokens < 1 ||
      (prefix_cache_bytes > 0 && prefix_block_tokens > max_prompt_len)) {
    return bad("prefix_block_tokens", prefix_block_tokens,
               absl::StrCat("in [1, max_prompt_len=", max_prompt_len, "]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRequest(const EngineConfig& config,
                             const GenerationRequest& request) {
  if (request.beam_width < 1 || request.beam_width > config.max_beam_width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "beam_width=", request.beam_width, " must be in [1, max_beam_width=",
        config.max_beam_width, "] (set at export)"));
  }
  const int64_t len = request.prompt.size();
  if (len < 1 || len > config.max_prompt_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt length=", len,
        " must be in [1, max_prompt_len=", config.max_prompt_len, "]"));
  }
  for (int64_t i = 0; i < len; ++i) {
    const int32_t t = request.prompt[i];
    if (t < 0 || t >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token ", i, "=", t,
                       " is outside [0, vocab_size=", config.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace tf_genrec
