"""HSTU hyper-parameters: one frozen dataclass validated in one place."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class HSTUConfig:
  """An HSTU encoder stack.

  max_len is N, the longest token sequence the model attends over: the
  pointwise attention divides by it (a constant, so a row's output does not
  depend on how far the batch is padded) and relative positions are clipped
  to it. time_bias adds the bucketed time-difference bias; datasets without
  timestamps (amazon-scientific) train with positions only.
  """
  max_len: int = 50
  # Width and dropout: the best validation NDCG@10 of the levers measured on
  # amazon-scientific (docs/quality.md, "HSTU retrieval").
  hidden_dim: int = 128
  num_layers: int = 2
  num_heads: int = 2
  attention_dim: int = 64  # Per-head size of Q and K.
  linear_dim: int = 64  # Per-head size of U and V.
  dropout: float = 0.5
  time_bias: bool = False
  num_time_buckets: int = 64
  # Bucket of a time gap dt (seconds): floor(log(1 + |dt|) / log(base)).
  time_bucket_base: float = 1.5
  epsilon: float = 1e-6  # Layer-norm epsilon.

  def __post_init__(self):
    for name in ("max_len", "hidden_dim", "num_layers", "num_heads",
                 "attention_dim", "linear_dim", "num_time_buckets"):
      if getattr(self, name) < 1:
        raise ValueError(f"HSTUConfig.{name} must be >= 1, got "
                         f"{getattr(self, name)}")
    if not 0 <= self.dropout < 1:
      raise ValueError(f"HSTUConfig.dropout must be in [0, 1), got "
                       f"{self.dropout}")
    if self.time_bucket_base <= 1:
      raise ValueError("HSTUConfig.time_bucket_base must be > 1, got "
                       f"{self.time_bucket_base}")
