"""The TensorRT-LLM backend without TensorRT-LLM: builds the C++ test binary
(tests/cc/tensorrt_llm_engine_test.cc: the backend over a fake executor with
real beam-search semantics, checked against tf_genrec::BeamSearch and a
brute-force ranking) against TF's headers and absl, and runs it; runs the
real GenrecGenerate op and a SavedModel over a library that registers the
backend with the fake executor; and checks the export's refusals. The
binding to the real executor (executor_binding.cc) is not compiled here."""
import dataclasses
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from recall_testlib import tiny_recall_assets
from tf_genrec import ops
from tf_genrec.builders.build import build_generative_recall
from tf_genrec.generation import tensorrt_llm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = os.path.join(ROOT, "custom_ops", "engine", "tensorrt_llm")


def backend_sources():
  """The backend's portable sources: all but the binding."""
  return [p for p in sorted(glob.glob(os.path.join(BACKEND, "*.cc")))
          if not p.endswith("executor_binding.cc")]


def _compile(sources, out_dir):
  """Objects of `sources`, unoptimised and one process per file (the build
  dominates these tests); -fPIC so they also link into a library."""
  compile_flags = [("-isystem" + f[2:]) if f.startswith("-I") else f
                   for f in tf.sysconfig.get_compile_flags()]
  objects, jobs = {}, []
  for source in sources:
    objects[source] = str(out_dir / (os.path.basename(source) + ".o"))
    jobs.append(subprocess.Popen(
        ["g++", "-c", "-O0", "-fPIC", "-std=c++17", "-Wall", "-Werror",
         "-pthread", "-I" + ROOT] + compile_flags +
        [source, "-o", objects[source]], stderr=subprocess.PIPE, text=True))
  for job in jobs:
    _, err = job.communicate()
    assert job.returncode == 0, err[-5000:]
  return objects


def _link(command):
  result = subprocess.run(command, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-5000:]


ENGINE_SOURCES = [os.path.join(ROOT, "custom_ops", "engine", name)
                  for name in ("engine.cc", "trie.cc")]
FAKE_EXECUTOR = os.path.join(ROOT, "tests", "cc", "fake_executor.cc")
TEST_MAIN = os.path.join(ROOT, "tests", "cc", "tensorrt_llm_engine_test.cc")
FAKE_BACKEND = os.path.join(ROOT, "tests", "cc",
                            "fake_tensorrt_llm_backend.cc")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """The C++ test binary, and a stand-in for _tf_genrec_tensorrt_llm_ops.so
  that registers the backend over the fake executor (linked, like the real
  one, against the default op library)."""
  out_dir = tmp_path_factory.mktemp("trt")
  objects = _compile(backend_sources() + ENGINE_SOURCES +
                     [FAKE_EXECUTOR, TEST_MAIN, FAKE_BACKEND], out_dir)
  binary = str(out_dir / "tensorrt_llm_engine_test")
  _link(["g++", "-pthread"] +
        [objects[s] for s in backend_sources() + ENGINE_SOURCES +
         [FAKE_EXECUTOR, TEST_MAIN]] +
        ["-o", binary] + tf.sysconfig.get_link_flags() +
        ["-Wl,-rpath," + tf.sysconfig.get_lib()])
  library = str(out_dir / "fake_tensorrt_llm_ops.so")
  ops_dir = os.path.dirname(ops.__file__)
  _link(["g++", "-shared", "-pthread"] +
        [objects[s] for s in backend_sources() +
         [FAKE_EXECUTOR, FAKE_BACKEND]] +
        ["-o", library, "-L" + ops_dir, "-l:_tf_genrec_ops.so",
         "-Wl,-rpath," + ops_dir] + tf.sysconfig.get_link_flags())
  return dict(binary=binary, library=library)


def test_binding_is_the_only_tensorrt_llm_include():
  for path in glob.glob(os.path.join(BACKEND, "*")):
    with open(path) as f:
      includes = "#include \"tensorrt_llm/" in f.read()
    assert includes == path.endswith("executor_binding.cc"), path


def test_backend_through_fake_executor(built):
  result = subprocess.run([built["binary"]], capture_output=True, text=True,
                          timeout=120)
  print(result.stdout)
  assert result.returncode == 0, result.stdout + result.stderr[-5000:]
  assert "ALL PASSED" in result.stdout
  assert "exactness: 162 cases" in result.stdout


# The op path: a SavedModel with backend "tensorrt_llm", saved and served by
# a process that loaded the stand-in library (the model the library's fake
# executor runs is _toy_logits below).
SID_OFFSET, K_CODES, LEVELS, VOCAB, END_ID = 5, 4, 3, 20, 1
SIDS = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 0], [1, 0, 0], [1, 3, 2],
                 [2, 2, 2], [2, 2, 1], [3, 0, 1], [3, 1, 1], [3, 3, 3],
                 [0, 3, 3], [2, 0, 3]], np.int32)
PROMPTS = [[7, 3, 11], [2, 9], [19, 4, 4], [6]]
WIDTHS = [12, 3, 16, 1]

_SERVE_SCRIPT = """
import json, sys, types
import numpy as np
import tensorflow as tf
from tf_genrec import ops
from tf_genrec.generation import tensorrt_llm
from tf_genrec.generation.engine_generator import EngineGenerator
from tf_genrec.generation.trie import SemanticIdTrie
library, engine_dir, out = sys.argv[1:4]
spec = json.loads(sys.argv[4])
tf.load_op_library(library)
gen = EngineGenerator(
    types.SimpleNamespace(config=types.SimpleNamespace(
        vocab_size=spec["vocab"])),
    SemanticIdTrie(np.array(spec["sids"]), spec["k"]), spec["sid_offset"],
    max_beam_width=16, sid_softmax="trie", max_prompt_len=8,
    tensorrt_llm_engine_dir=engine_dir)
tf.saved_model.save(gen, out)
del gen
loaded = tf.saved_model.load(out)
def run(prompts, widths):
  width = max(len(p) for p in prompts)
  ids = [[0] * (width - len(p)) + p for p in prompts]
  codes, scores = loaded.generate(tf.constant(ids, tf.int32),
                                  tf.constant([len(p) for p in prompts]),
                                  tf.constant(widths, tf.int32))
  return codes.numpy().tolist(), scores.numpy().tolist()
batch = run(spec["prompts"], spec["widths"])
alone = [run([p], [w]) for p, w in zip(spec["prompts"], spec["widths"])]
print("RESULT " + json.dumps(dict(batch=batch, alone=alone)))
"""


def _toy_logits(last):
  """fake_tensorrt_llm_backend.cc's model, in float64."""
  return 3.0 * np.sin(0.37 * last + 1.13 * np.arange(VOCAB))


def _exhaustive_ranking(prompt):
  """Every SID with its trie-softmax score (each level normalised over the
  prefix's trie children), best first: what a beam as wide as the trie
  returns."""
  ranked = []
  for sid in {tuple(s) for s in SIDS.tolist()}:
    score, last = 0.0, prompt[-1]
    for level in range(LEVELS):
      children = sorted({s[level] for s in SIDS.tolist()
                         if tuple(s[:level]) == sid[:level]})
      logits = _toy_logits(last)
      tokens = SID_OFFSET + level * K_CODES + np.array(children)
      token = SID_OFFSET + level * K_CODES + sid[level]
      score += logits[token] - np.log(np.sum(np.exp(logits[tokens])))
      last = token
    ranked.append((score, sid))
  ranked.sort(reverse=True)
  return ranked


def _fake_engine_dir(path, max_beam_width=16):
  os.makedirs(path)
  tensorrt_llm.write_settings(path, tensorrt_llm.EngineSettings(
      max_beam_width=max_beam_width, max_input_len=8,
      max_output_len=LEVELS, max_batch_size=4, dtype="float32",
      tokens_per_block=32, end_id=END_ID))
  for name, text in (("config.json", "{}"), ("rank0.engine", "weights")):
    with open(os.path.join(path, name), "w") as f:
      f.write(text)
  os.makedirs(os.path.join(path, "trtllm_checkpoint"))  # Not an asset.
  return path


def test_savedmodel_through_the_op_and_without_the_library(built, tmp_path):
  """Export -> SavedModel -> GenrecGenerate -> TensorRtLlmEngine over the
  fake executor, in a process that loaded the stand-in library: rows as wide
  as the trie get the exhaustive ranking, every row gets what it gets alone;
  then this process (no such library) cannot load the SavedModel and is
  told which library to load."""
  engine_dir = _fake_engine_dir(str(tmp_path / "engine"))
  out = str(tmp_path / "saved")
  spec = dict(vocab=VOCAB, sids=SIDS.tolist(), k=K_CODES,
              sid_offset=SID_OFFSET, prompts=PROMPTS, widths=WIDTHS)
  result = subprocess.run(
      [sys.executable, "-c", _SERVE_SCRIPT, built["library"], engine_dir, out,
       json.dumps(spec)], capture_output=True, text=True, timeout=900,
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
  assert result.returncode == 0, result.stderr[-5000:]
  [line] = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
  got = json.loads(line[len("RESULT "):])
  codes, scores = (np.array(x) for x in got["batch"])
  assert codes.shape == (len(PROMPTS), max(WIDTHS), LEVELS)
  for row, (prompt, width) in enumerate(zip(PROMPTS, WIDTHS)):
    alone_codes, alone_scores = (np.array(x)[0] for x in got["alone"][row])
    np.testing.assert_array_equal(codes[row, :width], alone_codes)
    np.testing.assert_allclose(scores[row, :width], alone_scores, atol=1e-5)
    assert (codes[row, width:] == -1).all()
    ranking = _exhaustive_ranking(prompt)
    reference = dict((sid, s) for s, sid in ranking)
    valid = min(width, len(ranking))
    for beam in range(valid):
      sid = tuple(codes[row, beam])
      assert sid in reference, (row, beam, sid)
      assert abs(scores[row, beam] - reference[sid]) < 1e-4
    assert (codes[row, valid:width] == -1).all()
    assert np.isneginf(scores[row, valid:]).all()
    if width >= len(ranking):
      assert [tuple(c) for c in codes[row, :valid]] == [
          sid for _, sid in ranking]
  assets = sorted(os.listdir(os.path.join(out, "assets")))
  assert assets == sorted(["config.json", "rank0.engine",
                           tensorrt_llm.ASSETS_NAME,
                           tensorrt_llm.SETTINGS_NAME])
  with pytest.raises(Exception, match="_tf_genrec_tensorrt_llm_ops.so"):
    tf.saved_model.load(out)


def test_export_refuses_beam_width_above_256(tmp_path):
  a = tiny_recall_assets(tmp_path)
  config = dataclasses.replace(a["config"], retrieval=dataclasses.replace(
      a["config"].retrieval, max_beam_width=257))
  with pytest.raises(ValueError, match="max_beam_width=257 exceeds "
                     "TensorRT-LLM's limit of 256"):
    build_generative_recall(config, a["ckpt"], a["table_path"],
                            sid_softmax="trie", engine="tensorrt_llm",
                            engine_dir=_fake_engine_dir(str(tmp_path / "e")))


def test_export_without_the_library_says_what_to_install(tmp_path,
                                                          monkeypatch):
  a = tiny_recall_assets(tmp_path)
  monkeypatch.setattr(tensorrt_llm, "library_path",
                      lambda: str(tmp_path / tensorrt_llm.LIBRARY_NAME))
  with pytest.raises(RuntimeError, match=r"install TensorRT-LLM 1\.2\.x "
                     r"\(pip install 'tensorrt_llm==1\.2\.\*'\) and rebuild"):
    build_generative_recall(a["config"], a["ckpt"], a["table_path"],
                            sid_softmax="trie", engine="tensorrt_llm",
                            engine_dir=_fake_engine_dir(str(tmp_path / "e")))
  with pytest.raises(ValueError, match="is for engine='tensorrt_llm' only"):
    build_generative_recall(a["config"], a["ckpt"], a["table_path"],
                            engine="cpu", engine_dir=str(tmp_path / "e"))
