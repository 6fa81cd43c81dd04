"""HSTU ranking: the interleaved item/action history + candidate items ->
per-task scores per candidate, by M-FALCON (history encoded once, candidates
in micro-batches)."""
from tf_genrec.builders.config import BehaviorConfig
from tf_genrec.builders.hstu_config import HSTUSceneConfig


def graph_config(max_history=50, max_candidates=16_384, micro_batch=128):
  return HSTUSceneConfig(
      name="hstu_ranking",
      behavior=BehaviorConfig(max_len=max_history, dedup_mode="none"),
      max_candidates=max_candidates, micro_batch=micro_batch)
