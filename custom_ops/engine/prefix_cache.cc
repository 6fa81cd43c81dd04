#include "custom_ops/engine/prefix_cache.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tf_genrec {
namespace {

// splitmix64's finaliser: a cheap, well-mixed step of the hash chain.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PrefixCache>> PrefixCache::Create(
    int64_t capacity_bytes, int block_tokens, int64_t block_floats) {
  const int64_t block_bytes =
      block_floats * static_cast<int64_t>(sizeof(float));
  if (capacity_bytes < block_bytes || capacity_bytes > kMaxCapacityBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefix_cache_bytes=", capacity_bytes, " must be 0 (off) or in [",
        block_bytes, " (the K/V of one block of prefix_block_tokens=",
        block_tokens, " tokens), ", kMaxCapacityBytes, "]"));
  }
  return std::unique_ptr<PrefixCache>(
      new PrefixCache(capacity_bytes, block_tokens, block_floats));
}

std::vector<uint64_t> PrefixCache::BlockHashes(
    absl::Span<const int32_t> prompt) const {
  std::vector<uint64_t> hashes;
  uint64_t h = Mix(block_tokens_);
  for (size_t end = block_tokens_; end <= prompt.size(); end += block_tokens_) {
    for (size_t i = end - block_tokens_; i < end; ++i) {
      h = Mix(h ^ static_cast<uint32_t>(prompt[i]));
    }
    hashes.push_back(h);
  }
  return hashes;
}

bool PrefixCache::Matches(const Entry& entry, absl::Span<const int32_t> prompt,
                          int index) const {
  const std::vector<int32_t>& prefix = entry.block->prefix;
  return prefix.size() == static_cast<size_t>(index + 1) *
                              static_cast<size_t>(block_tokens_) &&
         std::equal(prefix.begin(), prefix.end(), prompt.begin());
}

int64_t PrefixCache::BlockBytes(const Block& block) {
  return static_cast<int64_t>(block.kv.size() * sizeof(float) +
                              block.prefix.size() * sizeof(int32_t));
}

void PrefixCache::TouchChain(absl::Span<const uint64_t> hashes, int n) {
  for (int i = n - 1; i >= 0; --i) {
    auto it = blocks_.find(hashes[i]);
    if (it != blocks_.end()) lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
}

std::vector<PrefixCache::BlockPtr> PrefixCache::Lookup(
    absl::Span<const int32_t> prompt, absl::Span<const uint64_t> hashes,
    int max_blocks) {
  std::vector<BlockPtr> found;
  const int n = std::min<int>(max_blocks, hashes.size());
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < n; ++i) {
    auto it = blocks_.find(hashes[i]);
    if (it == blocks_.end() || !Matches(it->second, prompt, i)) break;
    found.push_back(it->second.block);
  }
  TouchChain(hashes, found.size());
  if (found.empty()) {
    ++stats_.misses;
  } else {
    ++stats_.hits;
    stats_.hit_tokens += static_cast<int64_t>(found.size()) * block_tokens_;
  }
  return found;
}

void PrefixCache::Insert(absl::Span<const int32_t> prompt,
                         absl::Span<const uint64_t> hashes, int first_block,
                         std::vector<std::vector<float>> kv) {
  absl::MutexLock lock(&mu_);
  const int end = first_block + static_cast<int>(kv.size());
  for (int i = first_block; i < end; ++i) {
    if (blocks_.contains(hashes[i])) continue;  // Same prefix, or a collision.
    auto block = std::make_shared<Block>();
    block->prefix.assign(
        prompt.begin(),
        prompt.begin() +
            static_cast<size_t>(i + 1) * static_cast<size_t>(block_tokens_));
    block->kv = std::move(kv[i - first_block]);
    const int64_t bytes = BlockBytes(*block);
    if (bytes > capacity_bytes_) break;  // Deeper blocks are larger still.
    lru_.push_front(hashes[i]);
    blocks_[hashes[i]] = Entry{std::move(block), lru_.begin()};
    stats_.bytes += bytes;
  }
  TouchChain(hashes, end);
  while (stats_.bytes > capacity_bytes_) {
    auto it = blocks_.find(lru_.back());
    stats_.bytes -= BlockBytes(*it->second.block);
    blocks_.erase(it);
    lru_.pop_back();
    ++stats_.evictions;
  }
}

PrefixCacheStats PrefixCache::Stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace tf_genrec
