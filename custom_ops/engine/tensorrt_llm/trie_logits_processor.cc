#include "custom_ops/engine/tensorrt_llm/trie_logits_processor.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace tf_genrec {

TrieLogitsProcessor::TrieLogitsProcessor(const SemanticIdTrie* trie,
                                         const EngineConfig& config,
                                         int prompt_len)
    : trie_(trie),
      num_levels_(config.num_levels),
      codebook_size_(config.codebook_size),
      sid_offset_(config.sid_offset),
      vocab_size_(config.vocab_size),
      prompt_len_(prompt_len) {}

int32_t TrieLogitsProcessor::PrefixNode(const int32_t* generated,
                                        int level) const {
  int32_t node = 0;
  for (int l = 0; l < level && node >= 0; ++l) {
    const int32_t code = generated[l] - sid_offset_ - l * codebook_size_;
    if (code < 0 || code >= codebook_size_) return -1;
    node = trie_->Child(l, node, code);
  }
  return node;
}

absl::Status TrieLogitsProcessor::Apply(
    float* logits, int num_beams, int vocab_stride,
    const std::vector<std::vector<int32_t>>& beam_tokens) const {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (vocab_stride < vocab_size_ ||
      static_cast<int>(beam_tokens.size()) != num_beams) {
    return absl::InternalError(absl::StrCat(
        "trie logits processor: got ", num_beams, " logit rows of width ",
        vocab_stride, " and ", beam_tokens.size(),
        " beams; need one row per beam, width >= vocab_size=", vocab_size_));
  }
  std::vector<float> level_logits(codebook_size_);
  std::vector<float> child_scores;
  for (int b = 0; b < num_beams; ++b) {
    const std::vector<int32_t>& tokens = beam_tokens[b];
    const int level = static_cast<int>(tokens.size()) - prompt_len_;
    if (level < 0 || level >= num_levels_) {
      return absl::InternalError(absl::StrCat(
          "trie logits processor: beam ", b, " has ", tokens.size(),
          " tokens, expected the prompt (", prompt_len_, ") plus fewer than ",
          num_levels_, " generated"));
    }
    float* row = logits + static_cast<int64_t>(b) * vocab_stride;
    const int32_t level_begin = sid_offset_ + level * codebook_size_;
    const int32_t node = PrefixNode(tokens.data() + prompt_len_, level);
    if (node < 0) {
      std::fill(row, row + vocab_stride, kNegInf);
      row[level_begin] = 0.0f;
      continue;
    }
    std::copy(row + level_begin, row + level_begin + codebook_size_,
              level_logits.begin());
    const int32_t begin = trie_->children_begin(level, node);
    const int n = trie_->children_end(level, node) - begin;
    child_scores.resize(n);
    ScoreChildren(*trie_, SidSoftmax::kTrie, level, node, level_logits.data(),
                  child_scores.data());
    std::fill(row, row + vocab_stride, kNegInf);
    const int32_t* codes = trie_->child_codes(level) + begin;
    for (int j = 0; j < n; ++j) row[level_begin + codes[j]] = child_scores[j];
  }
  return absl::OkStatus();
}

}  // namespace tf_genrec
