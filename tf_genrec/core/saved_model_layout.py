"""What a recall SavedModel holds beside its serving signatures: the contract
between the exporter (builders/export.py) and the server (serving/)."""
import os

# TF Serving's warmup requests, replayed when a version loads.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# A hidden signature (no inputs) returning the generation engine's counters,
# present when the generator is the engine op; "__" keeps it out of the
# signatures clients see, as TF's own __saved_model_init_op.
ENGINE_STATS_SIGNATURE = "__engine_stats"
