"""The item table file: item id -> semantic-ID codes + priority.

One line per item, `item_id<TAB>c_0 c_1 ... c_{L-1}<TAB>priority`. It is the one
source of truth for SemanticIdLookup, CodesToItems (items sharing a semantic ID
are listed by descending priority, ties by ascending item id) and the decoding
trie, and travels inside the SavedModel as an asset.

The shape of the codes (L levels of K codes each) is recorded beside it in
`<path>.shape.json` when the writer knows K, and checked by read_item_table:
a table read with another K, or whose rows no longer match the record, is an
error naming both values. (A sidecar, not a header: the C++ ItemTable reads
the TSV as it is.)
"""
import dataclasses
import json
import os
from typing import Optional

import numpy as np

SHAPE_SUFFIX = ".shape.json"


@dataclasses.dataclass(frozen=True)
class ItemTableData:
  item_ids: np.ndarray  # [N] int64
  codes: np.ndarray  # [N, L] int32
  priority: np.ndarray  # [N] float32
  codebook_size: Optional[int] = None  # K, if the file records it

  @property
  def num_levels(self) -> int:
    return self.codes.shape[1]


def format_item_line(item_id, codes, priority) -> str:
  """One line of the file (without the newline); also what sharded writers
  (tf_genrec/pipelines) emit, so every shard is an item table itself."""
  return (f"{int(item_id)}\t{' '.join(str(int(c)) for c in codes)}\t"
          f"{np.float32(priority):.9g}")


def _shape_path(path):
  return os.fspath(path) + SHAPE_SUFFIX


def write_item_table(path, item_ids, codes, priority=None,
                     codebook_size=None):
  """Writes the table; with codebook_size also its shape record."""
  item_ids = np.asarray(item_ids, np.int64)
  codes = np.asarray(codes, np.int64)
  if codes.ndim != 2 or codes.shape[0] != item_ids.shape[0]:
    raise ValueError(f"codes must be [num_items={item_ids.shape[0]}, L], "
                     f"got shape {codes.shape}")
  if codes.min(initial=0) < 0:
    raise ValueError("codes must be >= 0")
  if codebook_size is not None and codes.max(initial=0) >= codebook_size:
    raise ValueError(f"codes must be < codebook_size={codebook_size}, got "
                     f"{codes.max()}")
  if len(np.unique(item_ids)) != len(item_ids):
    raise ValueError("item_ids must be unique")
  priority = (np.zeros(len(item_ids), np.float32)
              if priority is None else np.asarray(priority, np.float32))
  with open(path, "w", encoding="utf-8") as f:
    for item, row, p in zip(item_ids, codes, priority):
      f.write(format_item_line(item, row, p) + "\n")
  if codebook_size is not None:
    with open(_shape_path(path), "w", encoding="utf-8") as f:
      json.dump({"num_levels": int(codes.shape[1]),
                 "codebook_size": int(codebook_size)}, f)
  elif os.path.exists(_shape_path(path)):
    os.remove(_shape_path(path))  # It described the file overwritten here.


def _check_shape(path, codes, codebook_size):
  """K from the shape record (checked against the rows and the caller's)."""
  if not os.path.exists(_shape_path(path)):
    return codebook_size
  with open(_shape_path(path), encoding="utf-8") as f:
    shape = json.load(f)
  recorded_k = shape["codebook_size"]
  if codebook_size is not None and codebook_size != recorded_k:
    raise ValueError(f"{path}: read with codebook_size={codebook_size}, but "
                     f"its {_shape_path(path)} records codebook_size="
                     f"{recorded_k}")
  if codes.size and codes.shape[1] != shape["num_levels"]:
    raise ValueError(f"{path}: rows have {codes.shape[1]} code levels, its "
                     f"{_shape_path(path)} records num_levels="
                     f"{shape['num_levels']}")
  if codes.size and codes.max() >= recorded_k:
    raise ValueError(f"{path}: code {codes.max()} >= the recorded "
                     f"codebook_size={recorded_k}")
  return recorded_k


def read_item_table(path, codebook_size=None) -> ItemTableData:
  """The table; codebook_size (if given) must match the recorded K."""
  item_ids, codes, priority = [], [], []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      fields = line.rstrip("\n").split("\t")
      if len(fields) != 3:
        raise ValueError(f"{path}:{line_no}: expected 3 tab-separated fields "
                         f"(item_id, codes, priority), got {len(fields)}")
      item_ids.append(int(fields[0]))
      codes.append([int(c) for c in fields[1].split()])
      priority.append(float(fields[2]))
  if len({len(c) for c in codes}) > 1:
    raise ValueError(f"{path}: rows have different numbers of code levels")
  codes = np.asarray(codes, np.int32).reshape(len(item_ids), -1)
  return ItemTableData(np.asarray(item_ids, np.int64), codes,
                       np.asarray(priority, np.float32),
                       _check_shape(path, codes, codebook_size))
