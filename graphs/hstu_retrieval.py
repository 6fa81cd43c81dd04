"""HSTU retrieval: the click history -> full-catalogue top-N items by
maximum inner product with the user's HSTU state (no semantic IDs)."""
from tf_genrec.builders.config import BehaviorConfig
from tf_genrec.builders.hstu_config import HSTUSceneConfig


def graph_config(max_history=50, default_top_n=300, max_top_n=1000):
  return HSTUSceneConfig(
      name="hstu_retrieval",
      behavior=BehaviorConfig(max_len=max_history, dedup_mode="none"),
      default_top_n=default_top_n, max_top_n=max_top_n)
