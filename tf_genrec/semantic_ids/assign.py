"""Semantic-ID assignment: collision handling, external codes, item table.

Two ways to deal with items whose L codes coincide (a "collision group"):
  * "disambiguate": append a level whose code is the item's rank in its group
    (by descending popularity, then item id), so every SID is unique;
  * "share": keep L levels; the items of a group share the SID and the item
    table's priority (= popularity) decides their order when a generated SID
    is mapped back to items.
"""
import numpy as np

from tf_genrec.tables.item_table import write_item_table

COLLISION_MODES = ("disambiguate", "share")


def collision_groups(codes):
  """-> (group index per item [N], group size per item [N])."""
  _, inverse, counts = np.unique(np.asarray(codes), axis=0,
                                 return_inverse=True, return_counts=True)
  inverse = inverse.reshape(-1)
  return inverse, counts[inverse]


def collision_stats(codes) -> dict:
  codes = np.asarray(codes)
  inverse, sizes = collision_groups(codes)
  return {
      "num_items": int(len(codes)),
      "num_unique_sids": int(inverse.max() + 1) if len(codes) else 0,
      # Fraction of items that share their SID with at least one other item.
      "collision_rate": float(np.mean(sizes > 1)) if len(codes) else 0.0,
      "max_items_per_sid": int(sizes.max()) if len(codes) else 0,
  }


def add_disambiguation_level(codes, priority, codebook_size: int):
  """[N, L] codes -> [N, L+1]; the new code is the rank within the group.

  Ranks follow the item-table order (descending priority, then ascending item
  id = row), so the most popular item of a group gets code 0.
  """
  codes = np.asarray(codes)
  priority = np.asarray(priority, np.float64)
  if priority.shape != (codes.shape[0],):
    raise ValueError(f"priority must be [num_items={codes.shape[0]}], got "
                     f"shape {priority.shape}")
  inverse, sizes = collision_groups(codes)
  if sizes.max(initial=0) > codebook_size:
    raise ValueError(f"a collision group has {sizes.max()} items, more than "
                     f"codebook_size={codebook_size} disambiguation codes")
  # Sort by group, then priority desc, then row; rank = position in the group.
  order = np.lexsort((np.arange(len(codes)), -priority, inverse))
  group_start = np.searchsorted(inverse[order], inverse[order], side="left")
  rank = np.empty(len(codes), np.int64)
  rank[order] = np.arange(len(codes)) - group_start
  return np.concatenate([codes, rank[:, None]], axis=1).astype(np.int32)


def resolve_collisions(codes, priority, mode: str, codebook_size: int):
  if mode == "disambiguate":
    return add_disambiguation_level(codes, priority, codebook_size)
  if mode == "share":
    return np.asarray(codes, np.int32)
  raise ValueError(f"collision mode must be one of {COLLISION_MODES}, got "
                   f"{mode!r}")


def validate_codes(codes, num_items: int, codebook_size: int, source="codes"):
  codes = np.asarray(codes)
  if codes.ndim != 2 or codes.shape[0] != num_items:
    raise ValueError(f"{source}: must be [num_items={num_items}, L], got "
                     f"shape {codes.shape}")
  if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
    raise ValueError(f"{source}: codes must be in [0, codebook_size="
                     f"{codebook_size}), got [{codes.min()}, {codes.max()}]")
  return codes.astype(np.int32)


def load_codes(path, num_items: int, codebook_size: int) -> np.ndarray:
  """Externally built SIDs: a [num_items, L] .npy (row = item id), or a text
  file of `item_id<TAB>c_0 ... c_{L-1}[<TAB>priority]` lines covering every
  item (an item_table.tsv qualifies; its priority is ignored)."""
  path = str(path)
  if path.endswith(".npy"):
    return validate_codes(np.load(path), num_items, codebook_size, path)
  ids, rows = [], []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      fields = line.rstrip("\n").split("\t")
      if len(fields) not in (2, 3):
        raise ValueError(f"{path}:{line_no}: expected item_id<TAB>codes"
                         f"[<TAB>priority], got {len(fields)} fields")
      ids.append(int(fields[0]))
      rows.append([int(c) for c in fields[1].split()])
  if len({len(r) for r in rows}) > 1:
    raise ValueError(f"{path}: rows have different numbers of code levels")
  if sorted(ids) != list(range(num_items)):
    raise ValueError(f"{path}: item ids must cover 0..{num_items - 1} exactly "
                     "once")
  out = np.empty((num_items, len(rows[0])), np.int64)
  out[np.asarray(ids)] = rows
  return validate_codes(out, num_items, codebook_size, path)


def write_sid_table(path, codes, priority, codebook_size):
  """Row i of `codes` is item id i; priority is e.g. training popularity."""
  write_item_table(path, np.arange(len(codes), dtype=np.int64), codes,
                   priority, codebook_size)
