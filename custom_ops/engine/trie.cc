#include "custom_ops/engine/trie.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace tf_genrec {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// log_softmax of x[idx[j]] over j (all of x when idx is null), written to
// out[j]; the same max-shifted form as tf.nn.log_softmax.
void LogSoftmax(const float* x, const int32_t* idx, int n, float* out) {
  float m = kNegInf;
  for (int j = 0; j < n; ++j) m = std::max(m, x[idx ? idx[j] : j]);
  float sum = 0.0f;
  for (int j = 0; j < n; ++j) sum += std::exp(x[idx ? idx[j] : j] - m);
  const float log_sum = std::log(sum);
  for (int j = 0; j < n; ++j) out[j] = (x[idx ? idx[j] : j] - m) - log_sum;
}

}  // namespace

absl::StatusOr<SemanticIdTrie> SemanticIdTrie::FromCodes(
    const std::vector<int32_t>& codes, int num_levels, int codebook_size) {
  if (num_levels < 1 || codebook_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("trie: num_levels=", num_levels,
                     " and codebook_size=", codebook_size, " must be >= 1"));
  }
  if (codes.empty() || codes.size() % num_levels != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trie: codes has ", codes.size(),
        " values, need a non-empty multiple of num_levels=", num_levels));
  }
  for (size_t i = 0; i < codes.size(); ++i) {
    if (codes[i] < 0 || codes[i] >= codebook_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "trie: code [", i / num_levels, ", ", i % num_levels, "]=", codes[i],
          " is outside [0, codebook_size=", codebook_size, ")"));
    }
  }
  const int64_t rows = codes.size() / num_levels;
  const int32_t* c = codes.data();
  auto row_less = [&](int64_t a, int64_t b) {
    return std::lexicographical_compare(
        c + a * num_levels, c + (a + 1) * num_levels, c + b * num_levels,
        c + (b + 1) * num_levels);
  };
  auto row_equal_upto = [&](int64_t a, int64_t b, int n) {
    return std::equal(c + a * num_levels, c + a * num_levels + n,
                      c + b * num_levels);
  };
  std::vector<int64_t> order(rows);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), row_less);
  order.erase(std::unique(order.begin(), order.end(),
                          [&](int64_t a, int64_t b) {
                            return row_equal_upto(a, b, num_levels);
                          }),
              order.end());

  SemanticIdTrie trie;
  trie.num_levels_ = num_levels;
  trie.codebook_size_ = codebook_size;
  int32_t num_parents = 1;
  for (int level = 0; level < num_levels; ++level) {
    std::vector<int32_t> splits(num_parents + 1, 0);
    std::vector<int32_t> child_codes;
    int32_t parent = -1;
    for (size_t i = 0; i < order.size(); ++i) {
      if (i > 0 && row_equal_upto(order[i], order[i - 1], level + 1)) continue;
      if (i == 0 || !row_equal_upto(order[i], order[i - 1], level)) ++parent;
      ++splits[parent + 1];
      child_codes.push_back(c[order[i] * num_levels + level]);
    }
    int max_children = 0;
    for (int32_t p = 0; p < num_parents; ++p) {
      max_children = std::max(max_children, splits[p + 1]);
      splits[p + 1] += splits[p];
    }
    num_parents = child_codes.size();
    trie.row_splits_.push_back(std::move(splits));
    trie.child_codes_.push_back(std::move(child_codes));
    trie.max_children_.push_back(max_children);
  }
  return trie;
}

int32_t SemanticIdTrie::Child(int level, int32_t node, int32_t code) const {
  const int32_t* begin = child_codes(level) + children_begin(level, node);
  const int32_t* end = child_codes(level) + children_end(level, node);
  const int32_t* it = std::lower_bound(begin, end, code);
  if (it == end || *it != code) return -1;
  return static_cast<int32_t>(it - child_codes(level));
}

void ScoreChildren(const SemanticIdTrie& trie, SidSoftmax mode, int level,
                   int32_t node, const float* level_logits,
                   float* child_scores) {
  const int32_t begin = trie.children_begin(level, node);
  const int n = trie.children_end(level, node) - begin;
  const int32_t* codes = trie.child_codes(level) + begin;
  if (mode == SidSoftmax::kTrie) {
    LogSoftmax(level_logits, codes, n, child_scores);
    return;
  }
  std::vector<float> all(trie.codebook_size());
  LogSoftmax(level_logits, nullptr, trie.codebook_size(), all.data());
  for (int j = 0; j < n; ++j) child_scores[j] = all[codes[j]];
}

BeamSearch::BeamSearch(const SemanticIdTrie* trie, SidSoftmax mode,
                       int beam_width)
    : trie_(trie),
      mode_(mode),
      beam_width_(beam_width),
      scores_{0.0f},
      nodes_{0} {}

void BeamSearch::Step(const float* logits) {
  const int k = trie_->codebook_size();
  struct Candidate {
    float score;
    int parent;
    int32_t child;  // depth-(level+1) node id; code-sorted within a parent
  };
  std::vector<Candidate> candidates;
  std::vector<float> child_scores(trie_->max_children(level_));
  for (int b = 0; b < num_beams(); ++b) {
    const int32_t begin = trie_->children_begin(level_, nodes_[b]);
    const int n = trie_->children_end(level_, nodes_[b]) - begin;
    ScoreChildren(*trie_, mode_, level_, nodes_[b], logits + b * k,
                  child_scores.data());
    for (int j = 0; j < n; ++j) {
      candidates.push_back({scores_[b] + child_scores[j], b, begin + j});
    }
  }
  // Higher score first; ties in candidate order (parent, then child).
  auto better = [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.parent != b.parent) return a.parent < b.parent;
    return a.child < b.child;
  };
  const size_t keep = std::min<size_t>(beam_width_, candidates.size());
  std::partial_sort(candidates.begin(), candidates.begin() + keep,
                    candidates.end(), better);
  std::vector<int32_t> codes(keep * (level_ + 1));
  scores_.resize(keep);
  nodes_.resize(keep);
  parents_.resize(keep);
  const int32_t* child_codes = trie_->child_codes(level_);
  for (size_t i = 0; i < keep; ++i) {
    const Candidate& cand = candidates[i];
    std::copy(codes_.begin() + cand.parent * level_,
              codes_.begin() + (cand.parent + 1) * level_,
              codes.begin() + i * (level_ + 1));
    codes[i * (level_ + 1) + level_] = child_codes[cand.child];
    scores_[i] = cand.score;
    nodes_[i] = cand.child;
    parents_[i] = cand.parent;
  }
  codes_ = std::move(codes);
  ++level_;
}

GenerationResult BeamSearch::Result() const {
  const int num_levels = trie_->num_levels();
  GenerationResult result;
  result.beam_width = beam_width_;
  result.codes.assign(static_cast<size_t>(beam_width_) * num_levels, -1);
  result.scores.assign(beam_width_, kNegInf);
  std::copy(codes_.begin(), codes_.end(), result.codes.begin());
  std::copy(scores_.begin(), scores_.end(), result.scores.begin());
  return result;
}

}  // namespace tf_genrec
