"""tf-genrec build_engine's commands and recorded settings, and the export's
checks for --engine=tensorrt_llm; nothing here runs TensorRT-LLM."""
import json
import os
import sys

import pytest

from tf_genrec.generation import tensorrt_llm


def settings(**overrides):
  values = dict(max_beam_width=128, max_input_len=266, max_output_len=4,
                max_batch_size=16, dtype="float16", tokens_per_block=32,
                end_id=2)
  values.update(overrides)
  return tensorrt_llm.EngineSettings(**values)


def flag(command, name):
  [value] = [a.split("=", 1)[1] for a in command if a.startswith(name + "=")]
  return value


def test_build_command_sizes_the_engine_for_recall():
  s = settings()
  command = tensorrt_llm.build_command("/ckpt", "/engine", s)
  assert command[0] == "trtllm-build"
  assert flag(command, "--checkpoint_dir") == "/ckpt"
  assert flag(command, "--output_dir") == "/engine"
  assert flag(command, "--max_beam_width") == "128"
  assert flag(command, "--max_input_len") == "266"
  assert flag(command, "--max_seq_len") == str(266 + 4)
  assert flag(command, "--max_batch_size") == "16"
  assert flag(command, "--max_num_tokens") == str(16 * 266)
  assert flag(command, "--logits_dtype") == "float32"
  assert flag(command, "--kv_cache_type") == "paged"
  assert flag(command, "--use_paged_context_fmha") == "enable"
  assert flag(command, "--tokens_per_block") == "32"


def test_convert_command_uses_the_qwen_converter():
  command = tensorrt_llm.convert_command("/hf", "/ckpt", "bfloat16")
  assert command[0] == sys.executable and command[1] == "-c"
  assert "QWenForCausalLM.from_hugging_face" in command[2]
  assert command[3:] == ["/hf", "/ckpt", "bfloat16"]


def test_settings_are_recorded_and_checked(tmp_path):
  path = tensorrt_llm.write_settings(str(tmp_path), settings())
  assert os.path.basename(path) == tensorrt_llm.SETTINGS_NAME
  with open(path) as f:
    recorded = json.load(f)
  assert recorded["max_beam_width"] == 128
  assert recorded["max_output_len"] == 4
  assert recorded["enable_block_reuse"] and recorded["paged_kv_cache"]
  assert recorded["tensorrt_llm_version"] == "1.2"
  assert tensorrt_llm.load_engine_settings(str(tmp_path), 128, 266, 4) == (
      recorded)
  with pytest.raises(ValueError, match="max_beam_width=128 < 256"):
    tensorrt_llm.check_engine_settings(recorded, 256, 266, 4)
  with pytest.raises(ValueError, match="max_input_len=266 < 300"):
    tensorrt_llm.check_engine_settings(recorded, 128, 300, 4)


def test_export_needs_recorded_settings(tmp_path):
  with pytest.raises(ValueError, match="tf_genrec_engine.json is missing"):
    tensorrt_llm.load_engine_settings(str(tmp_path), 128, 266, 4)


def test_settings_refuse_beam_width_above_256():
  with pytest.raises(ValueError, match=r"max_beam_width=257 must be in \[1, "
                     r"256\]"):
    settings(max_beam_width=257)


def test_end_id_is_never_a_semantic_id_token():
  assert tensorrt_llm.end_id({"eos_token_id": 2}, sid_offset=10) == 2
  assert tensorrt_llm.end_id({"eos_token_id": 50, "pad_token_id": 1},
                             sid_offset=10) == 1
  assert tensorrt_llm.end_id({"eos_token_id": 50}, sid_offset=10) == 0


def test_export_check(monkeypatch, tmp_path):
  with pytest.raises(ValueError, match="max_beam_width=512 exceeds "
                     "TensorRT-LLM's limit of 256"):
    tensorrt_llm.check_export(512, "trie")
  with pytest.raises(ValueError, match="sid_softmax='level'"):
    tensorrt_llm.check_export(256, "level")
  monkeypatch.setattr(tensorrt_llm, "_OPS_DIR", str(tmp_path))
  with pytest.raises(RuntimeError, match="_tf_genrec_tensorrt_llm_ops.so.*"
                     "TensorRT-LLM 1.2.x.*TENSORRT_LLM_ROOT"):
    tensorrt_llm.check_export(256, "trie")
  (tmp_path / tensorrt_llm.LIBRARY_NAME).write_bytes(b"")
  tensorrt_llm.check_export(256, "trie")
