// Checks CalibrateRowTiling and PackRows (custom_ops/engine/row_tiling.h)
// against simulated kernels whose sums run in a known order per row, so the
// expected tiling is known whatever CPU runs the test; exits non-zero on the
// first failure.
#include "custom_ops/engine/row_tiling.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <set>
#include <vector>

namespace {

using tf_genrec::RowLayout;
using tf_genrec::RowProduct;
using tf_genrec::RowTiling;

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "FAIL %s\n", what);
  std::exit(1);
}

// c = a @ w for w [k, n] of fixed random values; `order(m, row)` picks the
// summation order of a row in a call of m rows: 0 forward, 1 backward, 2 in
// two halves (each order rounds differently).
RowProduct Simulated(int k, int n, int (*order)(int m, int row)) {
  auto w = std::make_shared<std::vector<float>>(k * n);
  std::mt19937 rng(k * 31 + n);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& v : *w) v = uniform(rng);
  return RowProduct{k, n, [k, n, w, order](int m, const float* a, float* c) {
                      for (int r = 0; r < m; ++r) {
                        const int how = order(m, r);
                        for (int j = 0; j < n; ++j) {
                          auto term = [&](int i) {
                            return a[r * k + i] * (*w)[i * n + j];
                          };
                          float sum = 0.0f, tail = 0.0f;
                          for (int i = 0; i < k; ++i) {
                            if (how == 0) sum += term(i);
                            if (how == 1) sum += term(k - 1 - i);
                            if (how == 2) (i < k / 2 ? sum : tail) += term(i);
                          }
                          c[r * n + j] = sum + tail;
                        }
                      }
                    }};
}

// Like OpenBLAS on this project's AMD EPYC: 12-row tiles whose slots 0-5
// and 6-11 differ, and a last partial tile that differs again.
int EpycLike(int m, int row) {
  if (row >= m - m % 12) return 2;
  return row % 12 < 6 ? 0 : 1;
}
// Order set by the row's distance from the call's end, in steps no tile is
// a multiple of: no tiling keeps rows apart.
int FromTheEnd(int m, int row) { return (m - row) % 5 == 0 ? 1 : 0; }
// Every row alike.
int Uniform(int, int) { return 0; }

void CheckLayout(const RowTiling& tiling, const std::vector<int>& counts) {
  const RowLayout layout = tf_genrec::PackRows(tiling, counts);
  Check(layout.rows % tiling.tile == 0, "whole tiles");
  std::set<int> used;
  std::vector<int> per_class(tiling.tile, 0);
  for (size_t i = 0; i < counts.size(); ++i) {
    Check(static_cast<int>(layout.at[i].size()) == counts[i], "every row");
    for (int r = 0; r < counts[i]; ++r) {
      const int at = layout.at[i][r];
      Check(at >= 0 && at < layout.rows, "inside the call");
      Check(used.insert(at).second, "one row per slot");
      // The class a row has when its part is packed alone.
      Check(tiling.slot_class[at % tiling.tile] ==
                tiling.row_class[r % tiling.tile],
            "a row keeps its class");
      ++per_class[tiling.row_class[r % tiling.tile]];
    }
  }
  // The fewest tiles that hold every class's rows.
  int tiles = 0;
  for (int c = 0; c < tiling.tile; ++c) {
    int slots = 0;
    for (int s : tiling.slot_class) slots += s == c;
    if (slots > 0) tiles = std::max(tiles, (per_class[c] + slots - 1) / slots);
  }
  Check(layout.rows == tiles * tiling.tile, "fewest tiles");
}

}  // namespace

int main() {
  const RowTiling epyc = tf_genrec::CalibrateRowTiling(
      {Simulated(16, 8, EpycLike), Simulated(24, 5, EpycLike)}, 96);
  Check(epyc.tile == 12, "EPYC-like tile is 12");
  Check(
      epyc.slot_class == std::vector<int>({0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1}),
      "EPYC-like slot classes");
  Check(
      epyc.row_class == std::vector<int>({0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1}),
      "rows alternate classes");

  // One product with a size-dependent order spoils every tile.
  const RowTiling none = tf_genrec::CalibrateRowTiling(
      {Simulated(16, 8, EpycLike), Simulated(16, 8, FromTheEnd)}, 96);
  Check(!none.merges() && none.tile == 1, "no tiling found");

  const RowTiling uniform =
      tf_genrec::CalibrateRowTiling({Simulated(16, 8, Uniform)}, 96);
  Check(uniform.tile == 4 && uniform.slot_class == std::vector<int>(4, 0),
        "uniform rows take the smallest tile, one class");

  // Two 5-row requests share one tile; alone, each is padded to one.
  Check(tf_genrec::PackRows(epyc, {5}).rows == 12, "5 rows alone");
  const RowLayout two = tf_genrec::PackRows(epyc, {5, 5});
  Check(two.rows == 12, "two 5-row requests in one tile");
  Check(two.at[0] == std::vector<int>({0, 6, 1, 7, 2}), "first part's slots");
  // Tile 1: parts one after another, no padding.
  const RowLayout plain = tf_genrec::PackRows(RowTiling{}, {3, 2});
  Check(plain.rows == 5 && plain.at[1] == std::vector<int>({3, 4}),
        "tile 1 is contiguous");
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int> counts(1 + rng() % 40);
    for (int& c : counts) c = rng() % 70;
    CheckLayout(epyc, counts);
    CheckLayout(uniform, counts);
  }
  std::printf("row_tiling ok\n");
  return 0;
}
