// The trie constraint as a per-step logits rewrite, for executors that run
// their own beam search (log_softmax over the vocabulary, add to the beam's
// cumulative log-prob, keep the best beam_width continuations).
//
// Each beam's row is replaced by the trie children's log-probabilities from
// ScoreChildren (trie.h) at their tokens and -inf everywhere else, so only the
// current level's codes can stay finite and only existing prefixes survive.
// The executor's log_softmax of an already normalised row is the identity, so
// the beam search sees exactly the project's "trie" scores. The "level" mode
// cannot be expressed: the executor renormalises over the finite entries,
// i.e. over the children (see docs/tensorrt_llm.md); the engine refuses it.
#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_TRIE_LOGITS_PROCESSOR_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_TRIE_LOGITS_PROCESSOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "custom_ops/engine/engine.h"
#include "custom_ops/engine/trie.h"

namespace tf_genrec {

class TrieLogitsProcessor {
 public:
  // trie must outlive the processor.
  TrieLogitsProcessor(const SemanticIdTrie* trie, const EngineConfig& config,
                      int prompt_len);

  // logits: [num_beams, vocab_stride]; vocab_stride >= config.vocab_size
  // (padded vocabularies are masked too). A beam whose tokens leave the trie
  // (a filler beam of an executor with fewer valid continuations than beams)
  // keeps one finite logit so its row stays a distribution; its cumulative
  // score is already -inf or far below any SID's, so it never outranks one.
  absl::Status Apply(
      float* logits, int num_beams, int vocab_stride,
      const std::vector<std::vector<int32_t>>& beam_tokens) const;

  // The depth-`level` trie node of a beam's generated tokens, or -1 if they
  // are not a prefix of a semantic ID.
  int32_t PrefixNode(const int32_t* generated, int level) const;

 private:
  const SemanticIdTrie* trie_;
  int num_levels_;
  int codebook_size_;
  int sid_offset_;
  int vocab_size_;
  int prompt_len_;
};

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_TENSORRT_LLM_TRIE_LOGITS_PROCESSOR_H_
