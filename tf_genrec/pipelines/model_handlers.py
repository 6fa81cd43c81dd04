"""RunInference model handlers over the project's own models.

RunInference batches elements, loads a handler's model once per worker
process and shares it between the worker's threads; the handlers only say
how to load and how to run one batch. Wrap them in KeyedModelHandler to carry
item / user ids through.
"""
from typing import Any, Dict, Iterable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult


class TextEncoderHandler(ModelHandler):
  """Texts -> embeddings with an encoder of semantic_ids/embeddings.ENCODERS
  (each batch is one encoder call, as embed_texts makes)."""

  def __init__(self, encoder: str = "minilm", batch_size: int = 64,
               encoders: Optional[dict] = None):
    """encoders: name -> zero-argument factory (default ENCODERS); built
    in the worker, so only the name and the factory are pickled."""
    super().__init__()
    if batch_size <= 0:
      raise ValueError(f"batch_size must be > 0, got {batch_size}")
    self._encoder = encoder
    self._batch_size = batch_size
    self._encoders = encoders

  def load_model(self):
    from tf_genrec.semantic_ids.embeddings import ENCODERS
    encoders = self._encoders or ENCODERS
    if self._encoder not in encoders:
      raise ValueError(f"encoder must be one of {sorted(encoders)}, got "
                       f"{self._encoder!r}")
    return encoders[self._encoder]()

  def run_inference(self, batch: Sequence[str], model,
                    inference_args: Optional[Dict[str, Any]] = None
                    ) -> Iterable[PredictionResult]:
    embeddings = np.asarray(model.encode(list(batch)), np.float32)
    return [PredictionResult(text, vector)
            for text, vector in zip(batch, embeddings)]

  def batch_elements_kwargs(self):
    return {"min_batch_size": 1, "max_batch_size": self._batch_size}


class RecallModelHandler(ModelHandler):
  """Histories -> (item ids, scores) through an exported recall SavedModel's
  serving_default, with the request built as the evaluation builds it
  (evaluation/saved_model_recall.history_requests). A row's answer does not
  depend on its batch (the recall model's contract), so RunInference may
  batch users freely."""

  def __init__(self, saved_model_dir: str, beam_width: int, top_n: int,
               batch_size: int = 64):
    super().__init__()
    for name, value in (("beam_width", beam_width), ("top_n", top_n),
                        ("batch_size", batch_size)):
      if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    self._saved_model_dir = saved_model_dir
    self._beam_width = beam_width
    self._top_n = top_n
    self._batch_size = batch_size

  def load_model(self):
    import tensorflow as tf
    from tf_genrec import ops  # noqa: F401  (registers the custom ops)
    # The loaded object owns the signature's variables and assets; keep it.
    return tf.saved_model.load(self._saved_model_dir)

  def run_inference(self, batch: Sequence[np.ndarray], model,
                    inference_args: Optional[Dict[str, Any]] = None
                    ) -> Iterable[PredictionResult]:
    import tensorflow as tf
    from tf_genrec.evaluation.saved_model_recall import history_requests
    inputs = history_requests(list(batch))
    inputs["beam_width"] = np.full([len(batch)], self._beam_width, np.int32)
    inputs["top_n"] = np.full([len(batch)], self._top_n, np.int32)
    out = model.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in inputs.items()})
    items, scores = out["item_ids"].numpy(), out["scores"].numpy()
    results = []
    for history, row_items, row_scores in zip(batch, items, scores):
      valid = row_items >= 0  # -1 pads rows with fewer than top_n items
      results.append(PredictionResult(
          history, (row_items[valid], row_scores[valid])))
    return results

  def batch_elements_kwargs(self):
    return {"min_batch_size": 1, "max_batch_size": self._batch_size}
