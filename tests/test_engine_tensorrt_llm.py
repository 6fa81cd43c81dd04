"""The TensorRT-LLM backend without TensorRT-LLM: builds the C++ test binary
(tests/cc/tensorrt_llm_engine_test.cc: the backend over a fake executor with
real beam-search semantics, checked against tf_genrec::BeamSearch and a
brute-force ranking) against TF's headers and absl, and runs it. The binding
to the real executor (executor_binding.cc) is not compiled here."""
import glob
import os
import subprocess

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = os.path.join(ROOT, "custom_ops", "engine", "tensorrt_llm")


def backend_sources():
  """The backend's portable sources: all but the binding."""
  return [p for p in sorted(glob.glob(os.path.join(BACKEND, "*.cc")))
          if not p.endswith("executor_binding.cc")]


@pytest.fixture(scope="module")
def test_binary(tmp_path_factory):
  out_dir = tmp_path_factory.mktemp("trt")
  sources = backend_sources() + [
      os.path.join(ROOT, "custom_ops", "engine", "engine.cc"),
      os.path.join(ROOT, "custom_ops", "engine", "trie.cc"),
      os.path.join(ROOT, "tests", "cc", "fake_executor.cc"),
      os.path.join(ROOT, "tests", "cc", "tensorrt_llm_engine_test.cc")]
  compile_flags = [("-isystem" + f[2:]) if f.startswith("-I") else f
                   for f in tf.sysconfig.get_compile_flags()]
  # Unoptimised and one process per file: the build dominates the test.
  objects, jobs = [], []
  for source in sources:
    objects.append(str(out_dir / (os.path.basename(source) + ".o")))
    jobs.append(subprocess.Popen(
        ["g++", "-c", "-O0", "-std=c++17", "-Wall", "-Werror", "-pthread",
         "-I" + ROOT] + compile_flags + [source, "-o", objects[-1]],
        stderr=subprocess.PIPE, text=True))
  for job in jobs:
    _, err = job.communicate()
    assert job.returncode == 0, err[-5000:]
  out = str(out_dir / "tensorrt_llm_engine_test")
  link = (["g++", "-pthread"] + objects + ["-o", out] +
          tf.sysconfig.get_link_flags() +
          ["-Wl,-rpath," + tf.sysconfig.get_lib()])
  result = subprocess.run(link, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-5000:]
  return out


def test_binding_is_the_only_tensorrt_llm_include():
  for path in glob.glob(os.path.join(BACKEND, "*")):
    with open(path) as f:
      includes = "#include \"tensorrt_llm/" in f.read()
    assert includes == path.endswith("executor_binding.cc"), path


def test_backend_through_fake_executor(test_binary):
  result = subprocess.run([test_binary], capture_output=True, text=True,
                          timeout=120)
  print(result.stdout)
  assert result.returncode == 0, result.stdout + result.stderr[-5000:]
  assert "ALL PASSED" in result.stdout
  assert "exactness: 162 cases" in result.stdout
