"""Small datasets in the shared directory layout (tf_genrec/data/amazon.py)."""
import json

import numpy as np


def write_dataset(root, name, histories, timestamps=None, num_items=4):
  """<name>.item.json, <name>.inter.json (+ <name>.timestamps.json) in root."""
  root.mkdir(parents=True, exist_ok=True)
  (root / f"{name}.item.json").write_text(json.dumps(
      {str(i): {"title": f"item {i}"} for i in range(num_items)}))
  (root / f"{name}.inter.json").write_text(json.dumps(
      {str(u): h for u, h in enumerate(histories)}))
  if timestamps is not None:
    (root / f"{name}.timestamps.json").write_text(json.dumps(
        {str(u): t for u, t in enumerate(timestamps)}))


def random_histories(num_items, num_users, seed=0, lengths=(3, 7)):
  """num_users histories of distinct items, lengths in [lengths)."""
  rng = np.random.default_rng(seed)
  return [rng.choice(num_items, int(rng.integers(*lengths)),
                     replace=False).tolist() for _ in range(num_users)]
