"""The in-memory dataset every tool trains on, whatever format it came from.

Item ids are dense, 0..num_items-1 in catalogue order: the ids the models,
the item table and the served model use. `item_external_ids` keeps the ids
the source files used (tf_genrec/data/events.py), to map back at the output.
Histories and timestamps are `Ragged` (one flat array, data/ragged.py)
whatever they are given as, so memory per event is the same for every
source and no Python object is kept per user.
"""
import dataclasses

import numpy as np

from tf_genrec.data.ragged import Ragged

# Leave-one-out needs a target for test, one for validation and >= 1 input item.
MIN_HISTORY = 3


@dataclasses.dataclass(frozen=True)
class ItemInfo:
  title: str
  description: str
  brand: str
  categories: str

  def text(self, include_description: bool = False) -> str:
    """Text an encoder embeds: title, categories, brand (+ description)."""
    parts = [f"Title: {self.title}", f"Categories: {self.categories}",
             f"Brand: {self.brand}"]
    if include_description and self.description:
      parts.append(f"Description: {self.description}")
    return ". ".join(p.strip() for p in parts)


@dataclasses.dataclass(frozen=True)
class Dataset:
  histories: Ragged  # [user id] -> int64 item ids, oldest first
  items: list  # per item id: ItemInfo
  name: str = ""  # the files' <Name>
  # [user id] -> int64 unix seconds parallel to histories, or None.
  timestamps: Ragged = None
  # [num_items] external item ids (int64 or str) of dense ids 0.., or None
  # when the files already used the dense ids.
  item_external_ids: np.ndarray = None

  def __post_init__(self):
    object.__setattr__(self, "histories", Ragged.from_rows(self.histories))
    if self.timestamps is not None:
      object.__setattr__(self, "timestamps",
                         Ragged.from_rows(self.timestamps))

  def external_item_ids(self, item_ids) -> np.ndarray:
    """Dense ids (any shape; -1 = empty slot) -> the source files' ids.

    Empty slots become -1 (int64 ids) or "" (string ids).
    """
    item_ids = np.asarray(item_ids, np.int64)
    if self.item_external_ids is None:
      return item_ids
    empty = -1 if self.item_external_ids.dtype == np.int64 else ""
    table = np.append(self.item_external_ids, empty)
    return table[np.where(item_ids < 0, len(self.item_external_ids), item_ids)]

  @property
  def num_users(self) -> int:
    return len(self.histories)

  @property
  def num_items(self) -> int:
    return len(self.items)

  @property
  def num_interactions(self) -> int:
    return int(self.histories.lengths.sum())
