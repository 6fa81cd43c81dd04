"""Rows of different lengths in one flat NumPy array (CSR).

A Python list of NumPy arrays costs about 100 bytes of object per row on
top of its values, and freed small objects fragment the heap; at tens of
events per user that is as much memory as the events themselves. `Ragged`
keeps the values in one array and per row a start and an end (16 bytes);
row i is the view values[starts[i]:ends[i]], made when asked for. Rows of
several `Ragged` may share one values array (leave-one-out's train and test
inputs are the same histories, shorter by two and by one).
"""
import collections.abc

import numpy as np


class Ragged(collections.abc.Sequence):
  """A sequence of 1-D arrays: len(), [i] (a view), slices, iteration."""

  def __init__(self, values: np.ndarray, starts: np.ndarray,
               ends: np.ndarray):
    self.values = values
    self.starts = np.asarray(starts, np.int64)
    self.ends = np.asarray(ends, np.int64)

  @classmethod
  def from_lengths(cls, values: np.ndarray, lengths) -> "Ragged":
    """Consecutive rows of the given lengths tiling `values`."""
    ends = np.cumsum(lengths, dtype=np.int64)
    if ends.size and ends[-1] != len(values):
      raise ValueError(f"row lengths sum to {ends[-1]}, the values are "
                       f"{len(values)}")
    return cls(values, ends - np.asarray(lengths, np.int64), ends)

  @classmethod
  def from_rows(cls, rows, dtype=np.int64) -> "Ragged":
    """Any sequence of 1-D array-likes (a Ragged of `dtype` is kept)."""
    if isinstance(rows, Ragged) and rows.values.dtype == dtype:
      return rows
    arrays = [np.asarray(r, dtype).reshape(-1) for r in rows]
    values = np.concatenate(arrays) if arrays else np.zeros(0, dtype)
    return cls.from_lengths(values, [len(a) for a in arrays])

  def __len__(self) -> int:
    return len(self.starts)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return Ragged(self.values, self.starts[index], self.ends[index])
    return self.values[self.starts[index]:self.ends[index]]

  def __iter__(self):
    values = self.values
    for start, end in zip(self.starts.tolist(), self.ends.tolist()):
      yield values[start:end]

  @property
  def lengths(self) -> np.ndarray:
    return self.ends - self.starts

  def select(self, rows) -> "Ragged":
    """The rows of a boolean mask or index array, sharing the values."""
    return Ragged(self.values, self.starts[rows], self.ends[rows])

  def shortened(self, count: int) -> "Ragged":
    """Every row without its last `count` values (rows must have them)."""
    short = np.flatnonzero(self.lengths < count)
    if short.size:
      raise ValueError(f"row {short[0]} has {self.lengths[short[0]]} values, "
                       f"fewer than the {count} to drop")
    return Ragged(self.values, self.starts, self.ends - count)

  def last(self, offset: int = 1) -> np.ndarray:
    """[len] the value `offset` from each row's end (rows must have it)."""
    return self.values[self.ends - offset]

  def blocks(self, rows_per_block: int = 65536):
    """The values of consecutive rows, `rows_per_block` rows at a time
    (copies of bounded size, so no temporary as large as all the rows)."""
    lengths = self.lengths
    for first in range(0, len(self), rows_per_block):
      rows = slice(first, first + rows_per_block)
      n = lengths[rows]
      # Position k of the block's output is values[starts[row] + k - out].
      out = np.cumsum(n) - n
      index = np.arange(int(n.sum())) + np.repeat(self.starts[rows] - out, n)
      yield self.values[index]
