"""The CPU engine's C++ units, built as the op library builds them (-O3
-fno-trapping-math): the element-wise kernels (custom_ops/engine/
vector_math.cc) against double-precision references, in both variants the
library can run (multiversioned: the AVX2 clone on CPUs that have it; and
baseline only); and the row tiling that merges requests' products
(custom_ops/engine/row_tiling.cc) against simulated kernels."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_and_run(tmp_path, unit, flags=()):
  """Builds custom_ops/engine/<unit>.cc with tests/cc/<unit>_test.cc and
  returns the program's stdout (asserting it built and exited 0)."""
  binary = str(tmp_path / f"{unit}_test")
  sources = [os.path.join(ROOT, "custom_ops", "engine", f"{unit}.cc"),
             os.path.join(ROOT, "tests", "cc", f"{unit}_test.cc")]
  build = subprocess.run(
      ["g++", "-O3", "-fno-trapping-math", "-std=c++17", "-Wall", "-Werror",
       "-I" + ROOT, *flags, *sources, "-o", binary],
      capture_output=True, text=True)
  assert build.returncode == 0, build.stderr[-5000:]
  run = subprocess.run([binary], capture_output=True, text=True)
  assert run.returncode == 0, run.stderr
  return run.stdout


@pytest.mark.parametrize("variant", [[], ["-DTF_GENREC_VECTORIZED="]],
                         ids=["multiversioned", "baseline"])
def test_vector_math_matches_double_precision(tmp_path, variant):
  assert "vector_math ok" in _build_and_run(tmp_path, "vector_math", variant)


def test_row_tiling_finds_simulated_tiles_and_packs_rows(tmp_path):
  assert "row_tiling ok" in _build_and_run(tmp_path, "row_tiling")
