"""Request size limits (ServerOptions.max_*), checked on declared shapes.

Runs after the signature check and before any input is decoded, so nothing
is allocated from a shape a request merely declares.
"""
import math

from tf_genrec.serving.errors import exhausted

# Inputs whose dim 1 is a history length T / a context length (the recall
# signature's names, see tf_genrec/builders/recall_model.py).
HISTORY_INPUTS = ("item_ids", "timestamps", "action_types")
CONTEXT_INPUTS = ("context_ids",)


def check_request(options, specs):
  """specs: {input name: anything with .shape}. RESOURCE_EXHAUSTED naming
  the input, its size and the limit if a request is too large."""
  for key, spec in sorted(specs.items()):
    shape = tuple(spec.shape)
    elements = math.prod(shape)
    if elements > options.max_tensor_elements:
      raise exhausted(f"input '{key}' has {elements} elements (shape "
                      f"{list(shape)}), more than max_tensor_elements="
                      f"{options.max_tensor_elements}")
    if shape and shape[0] > options.max_batch_rows:
      raise exhausted(f"input '{key}' has {shape[0]} rows (dim 0), more than "
                      f"max_batch_rows={options.max_batch_rows}")
    for names, limit in ((HISTORY_INPUTS, "max_history_length"),
                         (CONTEXT_INPUTS, "max_context_length")):
      if key in names and len(shape) >= 2 and shape[1] > getattr(options,
                                                                 limit):
        raise exhausted(f"input '{key}' has length {shape[1]} (dim 1), more "
                        f"than {limit}={getattr(options, limit)}")
