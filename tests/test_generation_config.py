"""A checkpoint describes itself: generation_config.json read by the export."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

import graphs
from tf_genrec.builders.export_recall import (ExportOptions,
                                              export_recall_model,
                                              graph_config, prompt_spec)
from tf_genrec.generation.generation_config import (load_prompt_spec,
                                                    load_sid_softmax,
                                                    resolve_prompt_spec,
                                                    save_prompt_spec,
                                                    save_sid_softmax)
from tf_genrec.options import OptionsError
from tf_genrec.tables.item_table import read_item_table, write_item_table

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEFAULTS = {"scene": "ad_recall", "codebook_size": 256, "max_history": 50,
            "full_items": 0, "old_item_levels": 1}
UNCOMPRESSED = {"full_items": 0, "old_item_levels": 1}


def test_writers_keep_each_others_values(tmp_path):
  save_sid_softmax(tmp_path, "trie")
  save_prompt_spec(tmp_path, "search_recall", 3, 8, 6)
  save_sid_softmax(tmp_path, "trie")
  assert load_sid_softmax(tmp_path) == "trie"
  assert load_prompt_spec(tmp_path) == {"scene": "search_recall",
                                        "num_levels": 3, "codebook_size": 8,
                                        "max_history": 6, **UNCOMPRESSED}


def test_export_takes_the_trained_prompt_without_flags(tmp_path):
  save_prompt_spec(tmp_path, "search_recall", 3, 8, 6)
  given = {"scene": None, "num_levels": 3, "codebook_size": None,
           "max_history": None}
  spec = resolve_prompt_spec(tmp_path, given, DEFAULTS)
  assert spec == {"scene": "search_recall", "num_levels": 3,
                  "codebook_size": 8, "max_history": 6, **UNCOMPRESSED}
  # Agreeing flags are fine; an old checkpoint (no record) takes defaults.
  agreeing = dict(given, codebook_size=8, scene="search_recall")
  assert resolve_prompt_spec(tmp_path, agreeing, DEFAULTS) == spec
  assert resolve_prompt_spec(tmp_path / "missing", given, DEFAULTS) == {
      "scene": "ad_recall", "num_levels": 3, "codebook_size": 256,
      "max_history": 50, **UNCOMPRESSED}


def test_export_builds_the_trained_compressed_prompt(tmp_path):
  save_prompt_spec(tmp_path, "ad_recall", 3, 8, 6, full_items=2,
                   old_item_levels=1)
  table = tmp_path / "item_table.tsv"
  write_item_table(str(table), np.arange(2), np.array([[0, 1, 2], [1, 2, 3]]),
                   np.ones(2), codebook_size=8)
  options = ExportOptions(checkpoint_dir=str(tmp_path), item_table=str(table),
                          export_base_path=str(tmp_path / "export"))
  spec = prompt_spec(options, read_item_table(str(table)))
  template = graph_config(options, spec).template
  assert (template.full_items, template.old_item_levels) == (2, 1)


@pytest.mark.parametrize("key,value,trained", [
    ("codebook_size", 16, 8), ("max_history", 50, 6),
    ("scene", "ad_recall", "search_recall"), ("num_levels", 4, 3)])
def test_a_conflicting_value_names_both(tmp_path, key, value, trained):
  save_prompt_spec(tmp_path, "search_recall", 3, 8, 6)
  given = {"scene": None, "num_levels": 3, "codebook_size": None,
           "max_history": None, key: value}
  with pytest.raises(ValueError) as error:
    resolve_prompt_spec(tmp_path, given, DEFAULTS)
  assert f"{key}={value!r}" in str(error.value)
  assert f"{key}={trained!r}" in str(error.value)


def test_multi_branch_scene_wraps_the_ad_recall_prompt():
  assert graphs.prompt_scene("ad_recall_multi") == "ad_recall"
  assert graphs.prompt_scene("search_recall") == "search_recall"


def test_export_tool_refuses_a_flag_the_checkpoint_contradicts(tmp_path):
  save_prompt_spec(tmp_path, "ad_recall", 2, 8, 6)
  table = tmp_path / "item_table.tsv"
  write_item_table(str(table), np.arange(4), np.array([[0, 1], [1, 2],
                                                       [2, 3], [3, 4]]),
                   np.ones(4))
  result = subprocess.run(
      [sys.executable, "-m", "tools.export", f"--checkpoint_dir={tmp_path}",
       f"--item_table={table}", "--codebook_size=16",
       f"--export_base_path={tmp_path / 'export'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode != 0
  assert "codebook_size=16" in result.stderr
  assert "codebook_size=8" in result.stderr
  assert not (tmp_path / "export").exists()


def test_export_refuses_an_item_table_whose_recorded_k_contradicts(tmp_path):
  """The table's shape record (item_table.py) against the checkpoint's."""
  save_prompt_spec(tmp_path, "ad_recall", 2, 8, 6)
  table = tmp_path / "item_table.tsv"
  codes = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
  write_item_table(str(table), np.arange(4), codes, np.ones(4),
                   codebook_size=16)
  options = ExportOptions(checkpoint_dir=str(tmp_path), item_table=str(table),
                          export_base_path=str(tmp_path / "export"))
  with pytest.raises(OptionsError, match="codebook_size=16 conflicts with "
                     "the checkpoint, trained with codebook_size=8"):
    export_recall_model(options)
  with pytest.raises(OptionsError, match="read with codebook_size=8, but .* "
                     "records codebook_size=16"):
    export_recall_model(dataclasses.replace(options, codebook_size=8))
  assert not (tmp_path / "export").exists()
