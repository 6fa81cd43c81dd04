"""The prompt's token layout: what the ops wrappers, training and the
builders agree on about where each token of a prompt lives."""
import dataclasses
from typing import Tuple


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
  """Pre-tokenised prompt pieces and where semantic-ID tokens live.

  prompt = prefix + context + sid(item_1) + separator + ... + sid(item_n)
  + suffix. With suffix == separator, the prompt of history h[:n] followed by
  sid(h[n]) is a prefix of the prompt of h[:n+1]; that is what lets training
  run a causal LM over a whole history with the serving template.

  Compression (full_items > 0): only the last full_items items keep all L
  codes, older ones their first old_item_levels; an item is compressed once,
  when it leaves the window, so a returning user's prompt keeps its cached
  prefix up to the window.
  """
  prefix_ids: Tuple[int, ...]
  separator_ids: Tuple[int, ...]
  suffix_ids: Tuple[int, ...]
  sid_offset: int  # Token of code c at level l: sid_offset + l * K + c.
  num_levels: int  # L
  codebook_size: int  # K
  pad_token_id: int = 0
  max_prompt_len: int = 512
  truncate: bool = True  # Drop the oldest items instead of failing.
  full_items: int = 0  # Most recent items at full resolution; 0: all.
  old_item_levels: int = 1  # Codes kept of older items.

  def __post_init__(self):
    if self.full_items < 0:
      raise ValueError(f"full_items must be >= 0, got {self.full_items}")
    if not 1 <= self.old_item_levels <= self.num_levels:
      raise ValueError(f"old_item_levels must be in [1, L={self.num_levels}]"
                       f", got {self.old_item_levels}")

  @property
  def vocab_size(self) -> int:
    return self.sid_offset + self.num_levels * self.codebook_size

  def sid_tokens(self, codes):
    """Token ids of one item's codes (a sequence of L ints)."""
    return [self.sid_offset + l * self.codebook_size + int(c)
            for l, c in enumerate(codes)]
