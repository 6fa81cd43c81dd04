// A prefix K/V cache shared by an engine's requests, as paged-attention
// prefix caches do: a prompt is cut into blocks of block_tokens tokens, block
// i is keyed by a hash chain over blocks 0..i, and a request whose prompt
// starts with cached blocks computes only the tokens after them. Bounded in
// bytes, least recently used blocks evicted first; thread-safe.
//
// A block's K/V depends only on the tokens up to its end when the engine
// computes prompts in block-aligned chunks (cpu_engine.cc does), so a cached
// answer is bit-identical to the answer computed without hits.
#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_PREFIX_CACHE_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_PREFIX_CACHE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace tf_genrec {

struct PrefixCacheStats {
  int64_t hits = 0;        // Lookups that reused at least one block.
  int64_t misses = 0;      // Lookups that reused none.
  int64_t hit_tokens = 0;  // Prompt tokens whose K/V came from the cache.
  int64_t evictions = 0;   // Blocks evicted to stay within the capacity.
  int64_t bytes = 0;       // Held now (K/V and the key tokens).
};

class PrefixCache {
 public:
  static constexpr int64_t kMaxCapacityBytes = int64_t{1} << 40;  // 1 TiB
  // One block: the whole token prefix it ends (compared on lookup, so a hash
  // collision is a miss, never a wrong answer) and its K/V for every layer,
  // [layers, 2 (k, v), block_tokens, kv_width] floats.
  struct Block {
    std::vector<int32_t> prefix;
    std::vector<float> kv;
  };
  using BlockPtr = std::shared_ptr<const Block>;

  // INVALID_ARGUMENT naming the value and the limits unless capacity_bytes
  // is in [one block's K/V (block_floats * 4), kMaxCapacityBytes];
  // block_tokens >= 1 (EngineConfig::Validate checks it).
  static absl::StatusOr<std::unique_ptr<PrefixCache>> Create(
      int64_t capacity_bytes, int block_tokens, int64_t block_floats);

  int block_tokens() const { return block_tokens_; }
  int64_t block_floats() const { return block_floats_; }

  // hashes[i] keys blocks 0..i of `prompt` (its full blocks only).
  std::vector<uint64_t> BlockHashes(absl::Span<const int32_t> prompt) const;

  // The cached leading blocks of `prompt` (at most max_blocks; stops at the
  // first block not cached), marked most recently used; counts a hit or a
  // miss. The returned blocks stay valid even if evicted meanwhile.
  std::vector<BlockPtr> Lookup(absl::Span<const int32_t> prompt,
                               absl::Span<const uint64_t> hashes,
                               int max_blocks);

  // Adds blocks first_block.. of `prompt` (kv[j] is block first_block + j),
  // skipping those already cached, then evicts least recently used blocks
  // beyond the capacity. A chain's blocks are ordered so that its deepest
  // goes first: a block never outlives the blocks before it for long.
  void Insert(absl::Span<const int32_t> prompt,
              absl::Span<const uint64_t> hashes, int first_block,
              std::vector<std::vector<float>> kv);

  PrefixCacheStats Stats() const;

 private:
  PrefixCache(int64_t capacity_bytes, int block_tokens, int64_t block_floats)
      : capacity_bytes_(capacity_bytes),
        block_tokens_(block_tokens),
        block_floats_(block_floats) {}

  struct Entry {
    BlockPtr block;
    std::list<uint64_t>::iterator lru;  // Position in lru_.
  };

  // Whether `entry` holds exactly prompt[0, (index + 1) * block_tokens).
  bool Matches(const Entry& entry, absl::Span<const int32_t> prompt,
               int index) const;
  // Marks hashes[n-1], ..., hashes[0] (those cached) most recently used, in
  // that order, so eviction takes a chain's deepest blocks first.
  void TouchChain(absl::Span<const uint64_t> hashes, int n)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static int64_t BlockBytes(const Block& block);

  const int64_t capacity_bytes_;
  const int block_tokens_;
  const int64_t block_floats_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Entry> blocks_ ABSL_GUARDED_BY(mu_);
  std::list<uint64_t> lru_ ABSL_GUARDED_BY(mu_);  // Most recent first.
  PrefixCacheStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_PREFIX_CACHE_H_
