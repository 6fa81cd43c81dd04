"""Stochastic length (SL, Zhai et al. 2024, sec. 3.3) and feature
sequentialisation (sec. 2.1), both applied to training sequences offline.

SL: with N the model's max sequence length and alpha in (0, 2], a sequence
of n <= N^(alpha/2) items is kept whole; a longer one is kept whole with
probability N^alpha / n^2 and otherwise subsampled to N^(alpha/2) items
(order kept). Long, repetitive histories then cost far less attention while
every user still contributes.
"""
import numpy as np


def stochastic_length(sequence, max_len: int, alpha: float, rng,
                      times=None):
  """One training sequence (oldest first) -> itself or an SL subsample; with
  times (parallel to it) -> (sequence, times) both subsampled alike."""
  if not 0 < alpha <= 2:
    raise ValueError(f"stochastic length alpha must be in (0, 2], got {alpha}")
  n = len(sequence)
  threshold = int(max_len ** (alpha / 2))
  if n <= threshold or rng.random() < max_len ** alpha / n ** 2:
    keep = slice(None)
  else:
    keep = np.sort(rng.choice(n, threshold, replace=False))
  if times is None:
    return np.asarray(sequence)[keep]
  if len(times) != n:
    raise ValueError(f"{len(times)} times for a sequence of {n} items")
  return np.asarray(sequence)[keep], np.asarray(times)[keep]


def sequentialize(main_times, main_values, side_series):
  """Merges slowly changing side series into the main series by time.

  Each side series (times, values) is compressed to the first entry of each
  run of equal values, then all events are merged by time (the main series
  first among equal times). Returns (times, values, series index) with
  series 0 the main one and i + 1 the i-th side series.
  """
  times, values, series = [np.asarray(main_times)], [np.asarray(main_values)], [
      np.zeros(len(main_times), np.int32)]
  for i, (t, v) in enumerate(side_series):
    t, v = np.asarray(t), np.asarray(v)
    if len(t) != len(v):
      raise ValueError(f"side series {i}: {len(t)} times, {len(v)} values")
    starts = np.ones(len(v), bool)
    starts[1:] = v[1:] != v[:-1]
    times.append(t[starts])
    values.append(v[starts])
    series.append(np.full(int(starts.sum()), i + 1, np.int32))
  times, values, series = map(np.concatenate, (times, values, series))
  order = np.lexsort((series, times))
  return times[order], values[order], series[order]
