"""From files on disk (checkpoint, item table, scene) to a recall model."""
import os

import numpy as np

from tf_genrec.builders.config import RecallGraphConfig
from tf_genrec.builders.recall_model import GenerativeRecallModel
from tf_genrec.generation import tensorrt_llm
from tf_genrec.generation.beam_search import BeamSearchGenerator
from tf_genrec.generation.engine_generator import EngineGenerator
from tf_genrec.generation.generator import ENGINES
from tf_genrec.generation.generation_config import load_sid_softmax
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.models.qwen2.checkpoint import load_hf_checkpoint
from tf_genrec.tables.item_table import read_item_table
from tf_genrec.tables.item_table_resource import ItemTable
from tf_genrec.tables.item_vocabulary import (ItemVocabulary,
                                              read_item_vocabulary)


def build_generative_recall(config: RecallGraphConfig, checkpoint_dir,
                            item_table_path, generator_dtype="float32",
                            sid_softmax=None, engine="tf",
                            engine_dir=None, prefix_cache_bytes=0,
                            item_vocabulary_path=None
                            ) -> GenerativeRecallModel:
  """The recall model: Qwen2 checkpoint + item table + scene.

  engine: the generator (tf_genrec/generation/generator.py): "tf" the
  TF-native BeamSearchGenerator, "cpu" the GenrecGenerate op over the C++
  CPU engine, "tensorrt_llm" the same op over the TensorRT-LLM engine in
  engine_dir (`tf-genrec build_engine`; its files are copied into the
  SavedModel's assets; docs/tensorrt_llm.md).
  generator_dtype: engine "tf": the beam search's matmul dtype; bfloat16 is
  faster on CPUs with AVX512_BF16 but approximate. Engine "cpu": the engine
  file's weight dtype; bfloat16 halves the weight memory, computes in
  float32 and is approximate (see docs/benchmarks.md).
  sid_softmax: how the generator normalises each level; None reads what
  the checkpoint was trained with (generation_config.json).
  prefix_cache_bytes: the cpu engine's prefix K/V cache across requests
  (0: off), kept with the engine's settings in the SavedModel.
  item_vocabulary_path: the catalogue's item ids, line n = item id n
  (tables/item_vocabulary.py): the serving signature takes and returns
  them; the item table's ids must be line numbers of it.
  """
  if engine not in ENGINES:
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
  if (engine_dir is not None) != (engine == "tensorrt_llm"):
    raise ValueError(f"engine_dir={engine_dir!r} is for engine="
                     f"'tensorrt_llm' only (and required by it), got "
                     f"engine={engine!r}")
  if generator_dtype != "float32" and engine == "tensorrt_llm":
    raise ValueError(f"generator_dtype={generator_dtype!r} is for engine "
                     f"'tf' or 'cpu'; a TensorRT-LLM engine has its dtype "
                     f"from build_engine")
  if prefix_cache_bytes and engine != "cpu":
    raise ValueError(f"prefix_cache_bytes={prefix_cache_bytes} needs "
                     f"engine='cpu', got engine={engine!r}")
  if sid_softmax is None:
    sid_softmax = load_sid_softmax(checkpoint_dir)
  if engine == "tensorrt_llm":
    # Before anything is loaded: the width limit, the softmax mode, the op
    # library (RuntimeError saying what to install) and the engine's files.
    tensorrt_llm.check_export(config.retrieval.max_beam_width, sid_softmax)
    names = {os.path.basename(p) for p in tensorrt_llm.engine_files(engine_dir)}
    if os.path.basename(item_table_path) in names:
      raise ValueError(f"the item table's file name "
                       f"{os.path.basename(item_table_path)!r} is also a "
                       f"file of {engine_dir}: assets share one directory")
  t = config.template
  table_data = read_item_table(item_table_path, t.codebook_size)
  if table_data.num_levels != t.num_levels:
    raise ValueError(f"{item_table_path} has {table_data.num_levels} code "
                     f"levels, the {config.name} template expects "
                     f"{t.num_levels}")
  model = load_hf_checkpoint(checkpoint_dir)
  if model.config.vocab_size < t.vocab_size:
    raise ValueError(f"checkpoint vocab_size {model.config.vocab_size} < "
                     f"{t.vocab_size} needed by the template's SID tokens")
  trie = SemanticIdTrie(table_data.codes, t.codebook_size)
  if engine == "tensorrt_llm":
    generator = EngineGenerator(model, trie, t.sid_offset,
                                config.retrieval.max_beam_width,
                                sid_softmax=sid_softmax,
                                max_prompt_len=t.max_prompt_len,
                                tensorrt_llm_engine_dir=engine_dir)
  elif engine == "cpu":
    generator = EngineGenerator(model, trie, t.sid_offset,
                                config.retrieval.max_beam_width,
                                sid_softmax=sid_softmax,
                                max_prompt_len=t.max_prompt_len,
                                prefix_cache_bytes=prefix_cache_bytes,
                                weight_dtype=generator_dtype)
  else:
    generator = BeamSearchGenerator(model, trie, t.sid_offset,
                                    config.retrieval.max_beam_width,
                                    compute_dtype=generator_dtype,
                                    sid_softmax=sid_softmax)
  vocabulary = None
  if item_vocabulary_path:
    size = len(read_item_vocabulary(item_vocabulary_path))
    if not np.all((table_data.item_ids >= 0) & (table_data.item_ids < size)):
      raise ValueError(f"{item_table_path}: item ids must be lines of the "
                       f"item vocabulary {item_vocabulary_path}, in [0, "
                       f"{size}); got {table_data.item_ids.min()}.."
                       f"{table_data.item_ids.max()}")
    vocabulary = ItemVocabulary(item_vocabulary_path)
  item_table = ItemTable(item_table_path, t.num_levels, t.codebook_size)
  return GenerativeRecallModel(config, item_table, generator,
                               item_vocabulary=vocabulary)
