"""The generator interface the builders compose (DEVELOPERS.md contract).

Implementations: BeamSearchGenerator (TF-native, `--engine=tf`, the portable
reference) and EngineGenerator (the GenrecGenerate op over an engine
resource: `--engine=cpu`, or `--engine=tensorrt_llm` on a GPU,
docs/tensorrt_llm.md).
"""
from typing import Protocol, Tuple

import tensorflow as tf

ENGINES = ("tf", "cpu", "tensorrt_llm")


class Generator(Protocol):
  max_beam_width: int

  def generate(self, input_ids, lengths,
               beam_width) -> Tuple[tf.Tensor, tf.Tensor]:
    """Top semantic IDs per left-padded prompt row, best first.

    Args:
      input_ids: [B, P] int32 prompts, left-padded.
      lengths: [B] int32 prompt lengths in [1, P].
      beam_width: [B] int32 widths in [1, max_beam_width], or a scalar for
        every row.
    Returns:
      codes [B, W, L] int32 (-1 for invalid beams) and scores [B, W]
      float32 log-probabilities (-inf for invalid beams), W = the widest
      row; row b's first beam_width[b] beams are exactly a beam_width[b]-wide
      search of that row alone (whatever its batch-mates), -1/-inf after.
    """
