"""Training-history augmentation, redrawn every epoch.

A small generator trained for tens of epochs on one fixed sequence per user
learns those sequences by heart (training loss far below held-out loss).
Dropping random items yields a different, still plausible history each
epoch (later items follow earlier ones, with gaps), the augmentation of
CL4SRec's "item crop/mask" family applied to the LM's input and targets.
"""
import numpy as np


def drop_items(histories, rate: float, rng: np.random.Generator,
               min_length: int = 2):
  """Each item of each history dropped with probability `rate`.

  Histories keep their order; one shorter than `min_length` after dropping
  (or already) is returned unchanged, so every history still trains.
  """
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"item drop rate must be in [0, 1), got {rate}")
  out = []
  for h in histories:
    kept = np.asarray(h)[rng.random(len(h)) >= rate]
    out.append(kept if len(kept) >= min_length else np.asarray(h))
  return out
