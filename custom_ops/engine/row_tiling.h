// Where rows go when several requests share one matrix product.
//
// An answer must not depend on what its request was batched with, so a
// merged product may only hold rows whose results do not depend on the other
// rows of the call. OpenBLAS's sgemm gives that only in part: it computes
// rows in kernel tiles, a row in a full tile gets the same bits whatever the
// other rows hold, but the bits differ between some slots of a tile (on
// this project's AMD EPYC: slots 0-5 and 6-11 of a 12-row tile) and in a
// call's last, partial tile. The kernel is chosen per CPU when the library
// loads, so the engine measures its tiling when it starts
// (CalibrateRowTiling) and packs each step's rows by it (PackRows): every
// call's row count is a whole number of tiles, and a request's row r sits in
// a slot of the same class whether it runs alone or merged.
#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_ROW_TILING_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_ROW_TILING_H_

#include <functional>
#include <vector>

namespace tf_genrec {

struct RowTiling {
  int tile = 1;                       // Rows per kernel tile; 1: do not merge.
  std::vector<int> slot_class = {0};  // [tile] class of each slot.
  // [tile] class of a request's row r (at r % tile): the classes
  // interleaved in proportion to their slots, so a request's rows spread
  // over every class and requests share tiles.
  std::vector<int> row_class = {0};

  // Whether rows of different requests may share a product.
  bool merges() const { return tile > 1; }
};

// c[m, n] = a[m, k] @ (fixed weights), as the engine computes it.
struct RowProduct {
  int k = 0, n = 0;
  std::function<void(int m, const float* a, float* c)> run;
};

// The smallest tile of 4, 8, 12, 16, 24, 32, 48 or 64 rows (dividing
// max_rows) for which every product gives a probe row the same bits in
// every slot of one class, in calls of 1, 2, 3, 5, 8, ... tiles and of
// max_rows rows (sampled sizes: a BLAS picks its kernel path by ranges of
// sizes); RowTiling{} (tile 1) if none does. Probes and fill rows are
// random (fixed seed): a different kernel path changes the order of a row's
// sums, which changes some bits of nearly any random row.
RowTiling CalibrateRowTiling(const std::vector<RowProduct>& products,
                             int max_rows);

// Rows of one product: part i's row r is row at[i][r]; rows (a whole number
// of tiles) includes the padding rows no part uses.
struct RowLayout {
  int rows = 0;
  std::vector<std::vector<int>> at;
};

// Packs parts of counts[i] rows into the fewest tiles: row r of a part goes
// to the next free slot of class row_class[r % tile]. With tile 1 the parts
// lie one after another.
RowLayout PackRows(const RowTiling& tiling, const std::vector<int>& counts);

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_ROW_TILING_H_
