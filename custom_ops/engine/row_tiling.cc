#include "custom_ops/engine/row_tiling.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <random>
#include <utility>

namespace tf_genrec {
namespace {

constexpr int kTileCandidates[] = {4, 8, 12, 16, 24, 32, 48, 64};
constexpr int kProbes = 3;      // Probe rows per product.
constexpr int kPlacements = 4;  // Places each probe takes in a checked call.

void Fill(std::mt19937& rng, float* x, size_t n) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (size_t i = 0; i < n; ++i) x[i] = uniform(rng);
}

bool SameBits(const float* a, const float* b, int n) {
  return std::memcmp(a, b, sizeof(float) * n) == 0;
}

// Probe p of product j at slot s of a tile-row call: ref[j][p][s].
using SlotResults = std::vector<std::vector<std::vector<std::vector<float>>>>;

// Classes of slots whose probe results are equal in every product, numbered
// in slot order.
std::vector<int> ClassesOf(const SlotResults& ref, int tile) {
  std::vector<int> slot_class(tile, -1);
  int classes = 0;
  for (int s = 0; s < tile; ++s) {
    if (slot_class[s] >= 0) continue;
    slot_class[s] = classes;
    for (int t = s + 1; t < tile; ++t) {
      bool same = slot_class[t] < 0;
      for (size_t j = 0; same && j < ref.size(); ++j) {
        for (int p = 0; same && p < kProbes; ++p) {
          same = SameBits(ref[j][p][s].data(), ref[j][p][t].data(),
                          ref[j][p][s].size());
        }
      }
      if (same) slot_class[t] = classes;
    }
    ++classes;
  }
  return slot_class;
}

// Row r of a request takes the class of the r-th slot in the order (rank
// within its class, class): the classes interleave.
std::vector<int> InterleavedRowClasses(const std::vector<int>& slot_class) {
  const int tile = slot_class.size();
  std::vector<std::pair<int, int>> order;  // (rank in class, class)
  std::vector<int> seen(tile, 0);
  for (int c : slot_class) order.emplace_back(seen[c]++, c);
  std::sort(order.begin(), order.end());
  std::vector<int> row_class;
  for (const auto& [rank, c] : order) row_class.push_back(c);
  return row_class;
}

std::optional<RowTiling> TryTile(const std::vector<RowProduct>& products,
                                 int tile, int max_rows) {
  std::mt19937 rng(tile);
  SlotResults ref(products.size());
  std::vector<std::vector<float>> probes(products.size());
  for (size_t j = 0; j < products.size(); ++j) {
    const RowProduct& product = products[j];
    probes[j].resize(static_cast<size_t>(kProbes) * product.k);
    Fill(rng, probes[j].data(), probes[j].size());
    ref[j].assign(kProbes, std::vector<std::vector<float>>(tile));
    std::vector<float> a(static_cast<size_t>(tile) * product.k);
    std::vector<float> c(static_cast<size_t>(tile) * product.n);
    for (int shift = 0; shift < tile; ++shift) {
      Fill(rng, a.data(), a.size());
      for (int p = 0; p < kProbes; ++p) {
        const int s = (shift + p) % tile;
        std::copy_n(&probes[j][static_cast<size_t>(p) * product.k], product.k,
                    &a[static_cast<size_t>(s) * product.k]);
      }
      product.run(tile, a.data(), c.data());
      for (int p = 0; p < kProbes; ++p) {
        const int s = (shift + p) % tile;
        const float* row = &c[static_cast<size_t>(s) * product.n];
        ref[j][p][s].assign(row, row + product.n);
      }
    }
  }
  RowTiling tiling;
  tiling.tile = tile;
  tiling.slot_class = ClassesOf(ref, tile);
  tiling.row_class = InterleavedRowClasses(tiling.slot_class);
  // Each slot's reference: the probe in its class's first slot.
  std::vector<int> reference_slot(tile);
  for (int s = 0; s < tile; ++s) {
    reference_slot[s] =
        std::find(tiling.slot_class.begin(), tiling.slot_class.end(),
                  tiling.slot_class[s]) -
        tiling.slot_class.begin();
  }
  // Calls of 1, 2, 3, 5, 8, ... tiles and of max_rows: each probe at random
  // rows must give its class's bits.
  std::vector<int> call_tiles;
  for (int a = 1, b = 2; a < max_rows / tile; a = std::exchange(b, a + b)) {
    call_tiles.push_back(a);
  }
  call_tiles.push_back(max_rows / tile);
  for (int tiles : call_tiles) {
    const int m = tiles * tile;
    for (size_t j = 0; j < products.size(); ++j) {
      const RowProduct& product = products[j];
      std::vector<float> a(static_cast<size_t>(m) * product.k);
      std::vector<float> c(static_cast<size_t>(m) * product.n);
      Fill(rng, a.data(), a.size());
      std::vector<int> rows(m);
      for (int r = 0; r < m; ++r) rows[r] = r;
      std::shuffle(rows.begin(), rows.end(), rng);
      const int placed = std::min(m, kProbes * kPlacements);
      for (int i = 0; i < placed; ++i) {
        std::copy_n(&probes[j][static_cast<size_t>(i % kProbes) * product.k],
                    product.k, &a[static_cast<size_t>(rows[i]) * product.k]);
      }
      product.run(m, a.data(), c.data());
      for (int i = 0; i < placed; ++i) {
        const int s = reference_slot[rows[i] % tile];
        if (!SameBits(&c[static_cast<size_t>(rows[i]) * product.n],
                      ref[j][i % kProbes][s].data(), product.n)) {
          return std::nullopt;
        }
      }
    }
  }
  return tiling;
}

}  // namespace

RowTiling CalibrateRowTiling(const std::vector<RowProduct>& products,
                             int max_rows) {
  for (int tile : kTileCandidates) {
    if (max_rows % tile != 0) continue;
    if (std::optional<RowTiling> tiling = TryTile(products, tile, max_rows)) {
      return *tiling;
    }
  }
  return RowTiling{};
}

RowLayout PackRows(const RowTiling& tiling, const std::vector<int>& counts) {
  const int tile = tiling.tile;
  const int classes =
      *std::max_element(tiling.slot_class.begin(), tiling.slot_class.end()) + 1;
  std::vector<std::vector<int>> slots(classes);  // class -> its slots
  for (int s = 0; s < tile; ++s) slots[tiling.slot_class[s]].push_back(s);
  std::vector<int> placed(classes, 0);
  RowLayout layout;
  layout.at.resize(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    layout.at[i].resize(counts[i]);
    for (int r = 0; r < counts[i]; ++r) {
      const std::vector<int>& own = slots[tiling.row_class[r % tile]];
      const int n = placed[tiling.row_class[r % tile]]++;
      layout.at[i][r] = n / own.size() * tile + own[n % own.size()];
    }
  }
  int tiles = 0;
  for (int c = 0; c < classes; ++c) {
    const int cap = slots[c].size();
    tiles = std::max(tiles, (placed[c] + cap - 1) / cap);
  }
  layout.rows = tiles * tile;
  return layout;
}

}  // namespace tf_genrec
