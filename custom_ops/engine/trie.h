// The valid semantic IDs as a prefix tree, shared by every engine backend,
// and the per-level candidate rule (masking + normalisation) of the beam
// search. Same semantics as tf_genrec/generation/trie.py: level l is one CSR
// block; nodes at depth l are distinct l-prefixes numbered lexicographically
// (depth 0 = the root), and the children of depth-l node n are the depth-(l+1)
// nodes row_splits(l)[n] .. row_splits(l)[n+1]-1, code-sorted.
#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_TRIE_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_TRIE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "custom_ops/engine/engine.h"

namespace tf_genrec {

class SemanticIdTrie {
 public:
  // codes: [num_rows, num_levels] row-major, rows may repeat; every code in
  // [0, codebook_size). INVALID_ARGUMENT naming the first bad value.
  static absl::StatusOr<SemanticIdTrie> FromCodes(
      const std::vector<int32_t>& codes, int num_levels, int codebook_size);

  int num_levels() const { return num_levels_; }
  int codebook_size() const { return codebook_size_; }
  int64_t num_sids() const { return child_codes_.back().size(); }
  int max_children(int level) const { return max_children_[level]; }

  // Children of depth-`level` node `node`: node ids [begin, end) at depth
  // level+1 whose codes are child_codes(level)[begin .. end).
  int32_t children_begin(int level, int32_t node) const {
    return row_splits_[level][node];
  }
  int32_t children_end(int level, int32_t node) const {
    return row_splits_[level][node + 1];
  }
  const int32_t* child_codes(int level) const {
    return child_codes_[level].data();
  }

  // Node at depth `level + 1` after `code` from depth-`level` node `node`, or
  // -1 if that prefix is not in the trie.
  int32_t Child(int level, int32_t node, int32_t code) const;

 private:
  int num_levels_ = 0;
  int codebook_size_ = 0;
  std::vector<std::vector<int32_t>> row_splits_;   // [L][nodes(l) + 1]
  std::vector<std::vector<int32_t>> child_codes_;  // [L][nodes(l + 1)]
  std::vector<int> max_children_;                  // [L]
};

// The candidate rule, in one place for every backend: given the K logits of
// a beam's level (raw LM-head outputs of tokens sid_offset + level*K + [0,K)),
// writes the log-probability of each trie child of `node`, in child order
// (child_scores has children_end - children_begin entries): kLevel
// normalises over all K codes, kTrie over the children only. A backend that
// needs a masked K-vector instead scatters these to their codes and sets the
// rest to -inf.
void ScoreChildren(const SemanticIdTrie& trie, SidSoftmax mode, int level,
                   int32_t node, const float* level_logits,
                   float* child_scores);

// One request's constrained beam search, level by level. Candidates are
// ranked by score, ties by (parent beam, child position) ascending, which is
// tf.math.top_k's lower-index-first order over the TF generator's padded
// [W, max_children] candidates, so both pick the same beams.
class BeamSearch {
 public:
  BeamSearch(const SemanticIdTrie* trie, SidSoftmax mode, int beam_width);

  int level() const { return level_; }
  bool done() const { return level_ == trie_->num_levels(); }
  // Beams whose logits the next Step() needs (1 at level 0: the root).
  int num_beams() const { return static_cast<int>(scores_.size()); }

  // Advances one level. logits: [num_beams(), K] level logits. After it,
  // parent(i) is the previous beam new beam i extends and code(i) its new
  // code (its token for the next forward: sid_offset + (level()-1)*K + code).
  void Step(const float* logits);
  int parent(int i) const { return parents_[i]; }
  int32_t code(int i) const { return codes_[i * level_ + level_ - 1]; }

  // After the last level: beam_width beams best first, -1/-inf if fewer
  // SIDs are reachable.
  GenerationResult Result() const;

 private:
  const SemanticIdTrie* trie_;
  SidSoftmax mode_;
  int beam_width_;
  int level_ = 0;
  std::vector<float> scores_;   // [num_beams]; only valid beams are kept
  std::vector<int32_t> nodes_;  // [num_beams] depth-level trie nodes
  std::vector<int32_t> codes_;  // [num_beams, level]
  std::vector<int> parents_;    // [num_beams] after the last Step
};

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_TRIE_H_
