"""Scene config of the HSTU graphs (graphs/hstu_retrieval.py,
graphs/hstu_ranking.py): the behaviour rules and the request limits."""
import dataclasses

from tf_genrec.builders.config import BehaviorConfig
from tf_genrec.core.op_constants import MAX_TOP_N


@dataclasses.dataclass(frozen=True)
class HSTUSceneConfig:
  name: str
  # HSTU reads the event stream as it is (every event a token), so the
  # scenes keep dedup_mode "none"; filtering by action type and age applies.
  behavior: BehaviorConfig = BehaviorConfig(dedup_mode="none")
  default_top_n: int = 300  # Retrieval: items when a request omits top_n.
  max_top_n: int = MAX_TOP_N
  max_candidates: int = 16_384  # Ranking: candidate_item_ids columns.
  micro_batch: int = 128  # Ranking: M-FALCON's m.

  def __post_init__(self):
    if self.behavior.dedup_mode != "none":
      raise ValueError("HSTU scenes keep every event: behavior.dedup_mode "
                       f"must be 'none', got {self.behavior.dedup_mode!r}")
    if not 1 <= self.default_top_n <= self.max_top_n <= MAX_TOP_N:
      raise ValueError(f"need 1 <= default_top_n <= max_top_n <= {MAX_TOP_N}"
                       f", got {self.default_top_n}, {self.max_top_n}")
    if self.max_candidates < 1 or self.micro_batch < 1:
      raise ValueError("max_candidates and micro_batch must be >= 1, got "
                       f"{self.max_candidates}, {self.micro_batch}")
