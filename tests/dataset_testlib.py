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



def write_manifest_log(root):
  """A CSV log + catalogue under other field names, with a dataset.json
  that keeps clicks only: an event of an unknown item, a non-click event,
  a user (bob) left with 1 event by the filter, a timestamp tie. The
  catalogue's order fixes the dense ids: A=0, B=1, C=2."""
  (root / "catalogue.csv").write_text(
      "sku,title,category\nA,Lamp,home\nB,Pen,office\nC,Cup,home\n",
      encoding="utf-8")
  (root / "log.csv").write_text("\n".join([
      "uid,sku,ts,kind",
      "alice,A,30,click",
      "bob,B,5,click",
      "alice,B,10,click",
      "alice,C,10,buy",  # not a kept action
      "alice,Z,11,click",  # not in the catalogue
      "carol,C,2,click",
      "alice,C,20,click",
      "bob,A,6,view",  # not a kept action: bob keeps 1 event and goes
      "carol,A,2,click",  # same time as carol's C
      "carol,B,1,click"]) + "\n", encoding="utf-8")
  (root / "dataset.json").write_text(json.dumps({
      "events": "log.csv", "items": "catalogue.csv",
      "fields": {"user_id": "uid", "item_id": "sku", "timestamp": "ts",
                 "action_type": "kind"},
      "actions": ["click"]}), encoding="utf-8")
