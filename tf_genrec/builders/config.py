"""Configs of the recall graph: small dataclasses, one per stage."""
import dataclasses
from typing import Tuple

from tf_genrec.core.op_constants import DEDUP_MODES, MAX_TOP_N, MISSING_MODES
from tf_genrec.core.prompt import PromptTemplate


@dataclasses.dataclass(frozen=True)
class BehaviorConfig:
  """How raw behaviour events become a clean click history."""
  max_len: int = 50  # Most recent events kept.
  allowed_action_types: Tuple[int, ...] = ()  # Empty: every action type.
  max_age_seconds: int = 0  # Relative to request_time; 0: no limit.
  dedup_mode: str = "consecutive"
  missing_items: str = "drop"  # Items not in the item table: drop | error.
  # Truncation to max_len drops the oldest `rollover` items at once, so a
  # returning user's prompt keeps its cached prefix (the engine's prefix
  # cache) for rollover - 1 clicks instead of none; 1 slides by one item.
  rollover: int = 1

  def __post_init__(self):
    if self.max_len < 1:
      raise ValueError(f"max_len must be >= 1, got {self.max_len}")
    if not 1 <= self.rollover <= self.max_len:
      raise ValueError(f"rollover must be in [1, max_len={self.max_len}], "
                       f"got {self.rollover}")
    if self.dedup_mode not in DEDUP_MODES:
      raise ValueError(f"dedup_mode must be one of {DEDUP_MODES}, "
                       f"got {self.dedup_mode!r}")
    if self.missing_items not in MISSING_MODES:
      raise ValueError(f"missing_items must be one of {MISSING_MODES}, "
                       f"got {self.missing_items!r}")


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
  """Beam widths and result sizes; max_* are fixed at export."""
  max_beam_width: int = 256
  default_beam_width: int = 64
  max_top_n: int = MAX_TOP_N
  default_top_n: int = 300
  # Leave out items of the user's (cleaned) click history: recall then
  # spends its top-N on items the user has not interacted with yet.
  exclude_history: bool = False

  def __post_init__(self):
    if not 1 <= self.default_beam_width <= self.max_beam_width <= 1024:
      raise ValueError("need 1 <= default_beam_width <= max_beam_width <= "
                       f"1024, got {self.default_beam_width}, "
                       f"{self.max_beam_width}")
    if not 1 <= self.default_top_n <= self.max_top_n <= MAX_TOP_N:
      raise ValueError(f"need 1 <= default_top_n <= max_top_n <= {MAX_TOP_N}"
                       f", got {self.default_top_n}, {self.max_top_n}")


@dataclasses.dataclass(frozen=True)
class RecallGraphConfig:
  """One scene's recall graph (see graphs/)."""
  name: str
  template: PromptTemplate
  behavior: BehaviorConfig = BehaviorConfig()
  retrieval: RetrievalConfig = RetrievalConfig()
  context_input: bool = False  # Adds context_ids/context_lengths inputs.
  max_context_len: int = 64
