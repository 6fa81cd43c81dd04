"""Ready recall-graph definitions, one module per scene.

Each scene module exposes `graph_config(num_levels, codebook_size, **kw)
-> RecallGraphConfig`; `get(name)` finds one by name.
"""
import importlib

SCENES = ("ad_recall", "search_recall", "ad_recall_multi")


def get(name):
  if name not in SCENES:
    raise ValueError(f"unknown graph {name!r}; known: {SCENES}")
  return importlib.import_module(f"tf_genrec.graphs.{name}")
