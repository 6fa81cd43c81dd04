"""Ready recall-graph definitions, one module per scene.

Each semantic-ID scene module exposes `graph_config(num_levels,
codebook_size, **kw) -> RecallGraphConfig`, each HSTU scene
`graph_config(**kw) -> HSTUSceneConfig`; `get(name)` finds one by name.
"""
import importlib

SCENES = ("ad_recall", "search_recall", "ad_recall_multi")
HSTU_SCENES = ("hstu_retrieval", "hstu_ranking")


def prompt_scene(name):
  """The scene whose prompt a scene's generator was trained on (itself, or
  the scene it wraps, e.g. ad_recall_multi's generative branch: ad_recall)."""
  return getattr(get(name), "PROMPT_SCENE", name)


def get(name):
  if name not in SCENES + HSTU_SCENES:
    raise ValueError(f"unknown graph {name!r}; known: {SCENES + HSTU_SCENES}")
  return importlib.import_module(f"graphs.{name}")
