"""The item table file: item id -> semantic-ID codes + priority.

One line per item, `item_id<TAB>c_0 c_1 ... c_{L-1}<TAB>priority`. It is the one
source of truth for SemanticIdLookup, CodesToItems (items sharing a semantic ID
are listed by descending priority, ties by ascending item id) and the decoding
trie, and travels inside the SavedModel as an asset.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ItemTableData:
  item_ids: np.ndarray  # [N] int64
  codes: np.ndarray  # [N, L] int32
  priority: np.ndarray  # [N] float32

  @property
  def num_levels(self) -> int:
    return self.codes.shape[1]


def format_item_line(item_id, codes, priority) -> str:
  """One line of the file (without the newline); also what sharded writers
  (tf_genrec/pipelines) emit, so every shard is an item table itself."""
  return (f"{int(item_id)}\t{' '.join(str(int(c)) for c in codes)}\t"
          f"{np.float32(priority):.9g}")


def write_item_table(path, item_ids, codes, priority=None):
  item_ids = np.asarray(item_ids, np.int64)
  codes = np.asarray(codes, np.int64)
  if codes.ndim != 2 or codes.shape[0] != item_ids.shape[0]:
    raise ValueError(f"codes must be [num_items={item_ids.shape[0]}, L], "
                     f"got shape {codes.shape}")
  if codes.min(initial=0) < 0:
    raise ValueError("codes must be >= 0")
  if len(np.unique(item_ids)) != len(item_ids):
    raise ValueError("item_ids must be unique")
  priority = (np.zeros(len(item_ids), np.float32)
              if priority is None else np.asarray(priority, np.float32))
  with open(path, "w", encoding="utf-8") as f:
    for item, row, p in zip(item_ids, codes, priority):
      f.write(format_item_line(item, row, p) + "\n")


def read_item_table(path) -> ItemTableData:
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
  return ItemTableData(np.asarray(item_ids, np.int64),
                       np.asarray(codes, np.int32).reshape(len(item_ids), -1),
                       np.asarray(priority, np.float32))
