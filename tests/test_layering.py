"""The bottom layers import where the op library is not built."""
import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

# Every scene's config and the prompt it builds, op library absent.
_PROBE = """
import sys
import graphs
import tf_genrec.builders.config
import tf_genrec.builders.hstu_config
import tf_genrec.generation.generation_config
import tf_genrec.training.presets
for name in graphs.SCENES:
  config = graphs.get(name).graph_config(num_levels=3, codebook_size=8)
  assert config.template.vocab_size > 3 * 8, name
  assert graphs.prompt_scene(name) in graphs.SCENES
for name in graphs.HSTU_SCENES:
  graphs.get(name).graph_config()
assert not any(m == "tf_genrec.ops" for m in sys.modules), "ops loaded"
print(tf_genrec.__file__)
"""


def test_configs_and_scenes_import_without_the_op_library(tmp_path):
  # A copy of the Python sources without any .so, first on sys.path.
  for package in ("tf_genrec", "graphs"):
    shutil.copytree(REPO / package, tmp_path / package,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
  assert not list(tmp_path.rglob("*.so"))
  result = subprocess.run([sys.executable, "-c", _PROBE], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().startswith(str(tmp_path))
