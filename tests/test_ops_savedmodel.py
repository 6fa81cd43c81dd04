"""All ops + an asset-initialised ItemTable survive SavedModel export, a move
of the directory and loading in a fresh process (as TF Serving would)."""
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

from tf_genrec import ops
from tf_genrec.builders.recall_model import BEHAVIOR_INPUT_SPECS
from tf_genrec.tables.item_table import write_item_table
from tf_genrec.tables.item_table_resource import ItemTable

L, K = 2, 16


class RecallOps(tf.Module):
  """The recall path's ops in one signature (the generator is replaced by
  given beams, which is all CodesToItems needs)."""

  def __init__(self, table_path):
    super().__init__()
    self.table = ItemTable(table_path, L, K)

  @tf.function(input_signature=list(BEHAVIOR_INPUT_SPECS) + [
      tf.TensorSpec([None, None, L], tf.int32, "beam_codes"),
      tf.TensorSpec([None, None], tf.float32, "beam_scores"),
      tf.TensorSpec([], tf.int32, "top_n"),
  ])
  def __call__(self, item_ids, timestamps, action_types, lengths,
               request_time, beam_codes, beam_scores, top_n):
    history = ops.behavior_sequence(item_ids, timestamps, action_types,
                                    lengths, request_time, max_len=6,
                                    dedup_mode="keep_last")
    sids = self.table.lookup(history.item_ids, history.lengths)
    batch = tf.shape(item_ids)[0]
    prompts = ops.prompt_assemble(
        sids.codes, sids.lengths, tf.zeros([batch, 0], tf.int32),
        tf.zeros([batch], tf.int32), prefix_ids=[1], separator_ids=[2],
        suffix_ids=[3], sid_offset=8, codebook_size=K, max_prompt_len=64)
    items = self.table.codes_to_items(beam_codes, beam_scores, top_n)
    return {"input_ids": prompts.input_ids, "prompt_lengths": prompts.lengths,
            "num_dropped": history.num_dropped, "item_ids": items.item_ids,
            "scores": items.scores}


LOAD_AND_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    import tf_genrec.ops  # registers the custom ops before loading

    model_dir, inputs_path, outputs_path = sys.argv[1:]
    inputs = dict(np.load(inputs_path))
    first = tf.saved_model.load(model_dir)
    # A second load in this process shares the table resource (same
    # shared_name); re-initialising it from the same asset is a no-op.
    second = tf.saved_model.load(model_dir)
    serve = first.signatures["serving_default"]
    outputs = {k: v.numpy() for k, v in serve(**inputs).items()}
    again = second.signatures["serving_default"](**inputs)
    assert all((again[k].numpy() == v).all() for k, v in outputs.items())
    np.savez(outputs_path, **outputs)
""")


def test_saved_model_moves_and_loads_in_fresh_process(tmp_path):
  rng = np.random.default_rng(0)
  table_path = tmp_path / "build" / "items.tsv"
  table_path.parent.mkdir()
  item_ids = np.arange(1000, 1200)
  codes = rng.integers(0, K, (200, L))
  write_item_table(table_path, item_ids, codes, rng.random(200))
  module = RecallOps(str(table_path))
  export_dir = tmp_path / "build" / "model"
  tf.saved_model.save(module, str(export_dir))

  batch, events, width = 8, 12, 10
  inputs = {
      "item_ids": rng.choice(np.r_[item_ids, [5, 6]], (batch, events)),
      "timestamps": rng.integers(0, 100, (batch, events)),
      "action_types": np.zeros((batch, events), np.int32),
      "lengths": rng.integers(0, events + 1, batch).astype(np.int32),
      "request_time": np.full(batch, 80, np.int64),
      "beam_codes": codes[rng.integers(0, 200, (batch, width))].astype(
          np.int32),
      "beam_scores": np.where(rng.random((batch, width)) < 0.2, -np.inf,
                              -rng.random((batch, width))).astype(np.float32),
      "top_n": np.int32(7),
  }
  expected = {k: v.numpy() for k, v in module(**inputs).items()}
  assert (expected["item_ids"] >= 0).any() and (expected["num_dropped"] >
                                                0).any()

  moved = tmp_path / "deploy" / "1"
  moved.parent.mkdir()
  shutil.move(str(export_dir), str(moved))
  table_path.unlink()
  assert list((moved / "assets").iterdir())  # the table travelled as asset
  inputs_path = tmp_path / "inputs.npz"
  outputs_path = tmp_path / "outputs.npz"
  np.savez(inputs_path, **inputs)
  result = subprocess.run(
      [sys.executable, "-c", LOAD_AND_RUN, str(moved), str(inputs_path),
       str(outputs_path)], capture_output=True, text=True, timeout=120,
      cwd=tmp_path, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  got = dict(np.load(outputs_path))
  assert sorted(got) == sorted(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(got[key], value, err_msg=key)
