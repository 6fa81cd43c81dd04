"""Source style that CI enforces."""
import os
import shutil
import subprocess
import sys

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _clang_format():
  # requirements.txt installs it beside the interpreter; PATH may not have it.
  local = os.path.join(os.path.dirname(sys.executable), "clang-format")
  return local if os.path.exists(local) else shutil.which("clang-format")


def test_cpp_is_clang_formatted():
  sources = subprocess.run(
      ["git", "ls-files", "custom_ops/*.cc", "custom_ops/*.h", "tests/cc/*"],
      cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
  assert sources, "no C++ sources found"
  tool = _clang_format()
  assert tool, "clang-format is missing: run `make setup` (requirements.txt)"
  result = subprocess.run([tool, "--dry-run", "--Werror", *sources], cwd=REPO,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, (
      "run `clang-format -i` on these (Google style, .clang-format):\n" +
      result.stderr[:4000])
