"""EngineGenerator: the generator as one op (GenrecGenerate) over an engine
resource, the way TF-TRT wraps an engine: the engine file is a SavedModel
asset, the resource is created and loaded from it when a model version loads
and destroyed when the version unloads (so a version owns its engine).
Backends: "cpu" (the engine file holds the weights) and "tensorrt_llm" (a
TensorRT-LLM engine directory, docs/tensorrt_llm.md)."""
import os
import shutil
import tempfile
import uuid
import weakref

import tensorflow as tf
from tensorflow.python.ops import gen_resource_variable_ops

from tf_genrec import ops
from tf_genrec.generation import tensorrt_llm
from tf_genrec.generation.engine_file import write_engine_file
from tf_genrec.generation.generation_config import check_sid_softmax

ENGINE_FILE_NAME = "generation_engine.bin"


class GenerationEngine(tf.saved_model.experimental.TrackableResource):
  """The GenerationEngine resource, initialised from its engine-file asset."""

  def __init__(self, path, *, num_levels: int, codebook_size: int,
               sid_offset: int, max_beam_width: int, max_prompt_len: int,
               sid_softmax: str, max_queued_requests: int,
               max_step_tokens: int, num_threads: int,
               prefix_cache_bytes: int = 0, prefix_block_tokens: int = 16,
               backend: str = "cpu", extra_files=()):
    """path: the init op's asset; extra_files: more files the engine reads
    beside it (copied into the same flat assets directory)."""
    super().__init__()
    self._attrs = dict(backend=backend, num_levels=num_levels,
                       codebook_size=codebook_size, sid_offset=sid_offset,
                       max_beam_width=max_beam_width,
                       max_prompt_len=max_prompt_len, sid_softmax=sid_softmax,
                       max_queued_requests=max_queued_requests,
                       max_step_tokens=max_step_tokens,
                       num_threads=num_threads,
                       prefix_cache_bytes=prefix_cache_bytes,
                       prefix_block_tokens=prefix_block_tokens)
    # Unique per engine (as StaticHashTable's): each kernel instance must
    # find this one resource, and two loaded versions must not share one.
    self._shared_name = f"tf_genrec_engine_{uuid.uuid4()}"
    self._asset = self._track_trackable(tf.saved_model.Asset(path), "_asset")
    for i, extra in enumerate(extra_files):
      self._track_trackable(tf.saved_model.Asset(extra), f"_extra_file_{i}")
    with tf.init_scope():
      self._initialize()

  def _create_resource(self):
    return ops.generation_engine_handle(shared_name=self._shared_name,
                                        **self._attrs)

  def _initialize(self):
    return ops.generation_engine_init(
        self.resource_handle, tf.convert_to_tensor(self._asset, tf.string))

  def _destroy_resource(self):
    # Runs when the (loaded) object is garbage collected: drops the resource
    # manager's reference, so the engine and its threads go with the version.
    gen_resource_variable_ops.destroy_resource_op(self.resource_handle,
                                                  ignore_lookup_error=True)


class EngineGenerator(tf.Module):
  """Generator contract (tf_genrec/generation/generator.py) through the
  engine op. Built from the same model and trie as BeamSearchGenerator; the
  weights go into the engine file (one copy in the SavedModel's assets)."""

  def __init__(self, model, trie, sid_offset: int, max_beam_width: int,
               sid_softmax: str = "level", max_prompt_len: int = 2048,
               max_queued_requests: int = 1024, max_step_tokens: int = 8192,
               num_threads: int = 0, prefix_cache_bytes: int = 0,
               prefix_block_tokens: int = 16, weight_dtype: str = "float32",
               engine_dir=None, tensorrt_llm_engine_dir=None,
               name="engine_generator"):
    """engine_dir: where to write the engine file (if None, a temporary
    directory removed with this generator); export copies it into the
    SavedModel's assets.
    tensorrt_llm_engine_dir: a TensorRT-LLM engine (`tf-genrec build_engine`)
    to generate with instead of the CPU engine; its files go into the
    assets, the weights of `model` are not used (its vocab_size is).
    prefix_cache_bytes: the CPU engine's prefix K/V cache across requests
    (0: off; custom_ops/engine/prefix_cache.h), matched in blocks of
    prefix_block_tokens; the engine validates both when it loads.
    weight_dtype: how the CPU engine file stores the weight matrices
    (bfloat16: half the memory, computed in float32, approximate;
    engine_file.py)."""
    super().__init__(name=name)
    if not 1 <= max_beam_width <= 1024:
      raise ValueError(f"max_beam_width must be in [1, 1024], got "
                       f"{max_beam_width}")
    check_sid_softmax(sid_softmax)
    self.max_beam_width = int(max_beam_width)
    self.num_levels = trie.num_levels
    if engine_dir is None:
      # The engine reads its file when it is created, and export copies the
      # file into the SavedModel's assets while this generator lives; after
      # that the temporary copy (1.9 GB at the Qwen2-0.5B shape) goes.
      engine_dir = tempfile.mkdtemp(prefix="tf_genrec_engine_")
      weakref.finalize(self, shutil.rmtree, engine_dir, ignore_errors=True)
    os.makedirs(engine_dir, exist_ok=True)
    self.engine_dir = engine_dir
    if tensorrt_llm_engine_dir is None:
      backend, extra_files = "cpu", ()
      path = os.path.join(engine_dir, ENGINE_FILE_NAME)
      write_engine_file(path, model, trie, sid_offset, weight_dtype)
    else:
      backend = "tensorrt_llm"
      path, extra_files = tensorrt_llm.write_assets(
          engine_dir, tensorrt_llm_engine_dir, trie,
          model.config.vocab_size, max_beam_width, max_prompt_len)
    self.engine = GenerationEngine(
        path, num_levels=trie.num_levels, codebook_size=trie.codebook_size,
        sid_offset=sid_offset, max_beam_width=max_beam_width,
        max_prompt_len=max_prompt_len, sid_softmax=sid_softmax,
        max_queued_requests=max_queued_requests,
        max_step_tokens=max_step_tokens, num_threads=num_threads,
        prefix_cache_bytes=prefix_cache_bytes,
        prefix_block_tokens=prefix_block_tokens,
        backend=backend, extra_files=extra_files)

  @tf.function(input_signature=[
      tf.TensorSpec([None, None], tf.int32, name="input_ids"),
      tf.TensorSpec([None], tf.int32, name="lengths"),
      tf.TensorSpec(None, tf.int32, name="beam_width"),
  ])
  def generate(self, input_ids, lengths, beam_width):
    """beam_width: [B] per-row widths, or a scalar for every row."""
    beam_width = tf.broadcast_to(beam_width, tf.shape(lengths))
    return tuple(ops.generate(self.engine.resource_handle, input_ids, lengths,
                              beam_width, num_levels=self.num_levels))

  @tf.function(input_signature=[])
  def engine_stats(self):
    """int64 [len(ops.ENGINE_STATS)]; saved with the model, so a server can
    read a loaded version's counters (tf_genrec/serving/servable.py)."""
    return ops.generation_engine_stats(self.engine.resource_handle)

  def stats(self):
    """dict of the engine's counters (ops.ENGINE_STATS)."""
    return dict(zip(ops.ENGINE_STATS, self.engine_stats().numpy().tolist()))
