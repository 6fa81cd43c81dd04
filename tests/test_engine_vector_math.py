"""The CPU engine's element-wise kernels (custom_ops/engine/vector_math.cc)
against double-precision references (tests/cc/vector_math_test.cc), built
as the op library builds them (-O3 -fno-trapping-math) in both variants the
library can run: multiversioned (the AVX2 clone on CPUs that have it) and
baseline only."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = [os.path.join(ROOT, "custom_ops", "engine", "vector_math.cc"),
           os.path.join(ROOT, "tests", "cc", "vector_math_test.cc")]


@pytest.mark.parametrize("variant", [[], ["-DTF_GENREC_VECTORIZED="]],
                         ids=["multiversioned", "baseline"])
def test_kernels_match_double_precision(tmp_path, variant):
  binary = str(tmp_path / "vector_math_test")
  build = subprocess.run(
      ["g++", "-O3", "-fno-trapping-math", "-std=c++17", "-Wall", "-Werror",
       "-I" + ROOT] + variant + SOURCES + ["-o", binary],
      capture_output=True, text=True)
  assert build.returncode == 0, build.stderr[-5000:]
  run = subprocess.run([binary], capture_output=True, text=True)
  assert run.returncode == 0, run.stderr
  assert "vector_math ok" in run.stdout
