"""`ItemVocabulary`: the catalogue's own item ids <-> the model's item ids,
inside the graph.

The vocabulary file lists one external id per line; line n is item id n,
the dense id tf_genrec/data/events.py gives the catalogue's row n (`tf-genrec
convert --to=item_vocabulary` writes it). Both directions are
`tf.lookup.StaticHashTable`s initialised from the file, which the SavedModel
keeps as an asset (as the item table's). An export with a vocabulary takes
the behaviour `item_ids` as those ids, string or int64, and returns them.
"""
import numpy as np
import tensorflow as tf

_LINE = tf.lookup.TextFileIndex.LINE_NUMBER
_WHOLE = tf.lookup.TextFileIndex.WHOLE_LINE


def write_item_vocabulary(path, external_ids: np.ndarray) -> None:
  """external_ids[n] = the external id of item id n (int64 or str)."""
  lines = [str(i) for i in external_ids.tolist()]
  for n, line in enumerate(lines):
    if not line or line != line.strip() or "\n" in line or "\r" in line:
      raise ValueError(f"item id {line!r} (item {n}) cannot be a vocabulary "
                       "line: it is empty, has surrounding whitespace or a "
                       "line break")
  if len(set(lines)) != len(lines):
    raise ValueError(f"{path}: the external item ids must be unique")
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))


def read_item_vocabulary(path) -> np.ndarray:
  """[n] the external ids: int64 if every line is an integer (as the
  catalogue reader decides), else str."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  try:
    return np.array([int(line) for line in lines], np.int64)
  except ValueError:
    return np.array(lines, object)


class ItemVocabulary(tf.Module):
  """External item ids (string or int64) <-> item ids 0..n-1."""

  def __init__(self, path: str):
    super().__init__(name="item_vocabulary")
    self.dtype = (tf.int64 if read_item_vocabulary(path).dtype == np.int64
                  else tf.string)
    self._empty = "" if self.dtype == tf.string else -1
    self._to_dense = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(path, self.dtype, _WHOLE, tf.int64,
                                      _LINE), default_value=-1)
    self._to_external = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(path, tf.int64, _LINE, self.dtype,
                                      _WHOLE), default_value=self._empty)

  def to_dense(self, external_ids):
    """External ids (any shape) -> item ids; unknown ids -> -1."""
    return self._to_dense.lookup(external_ids)

  def to_external(self, item_ids):
    """Item ids (any shape) -> external ids; -1 (an empty slot) -> "" for
    string ids, -1 for int64 ids."""
    return self._to_external.lookup(item_ids)
