"""The `tf-genrec` entry point as a user runs it."""
import os
import subprocess
import sys

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
_NOISE = ("cudart_stub", "cuInit", "cpu_feature_guard")


def _run_cli(*args, **env):
  return subprocess.run(
      [sys.executable, "-m", "tf_genrec.cli", *args], cwd=REPO,
      env=dict(os.environ, **env), capture_output=True, text=True, timeout=300,
      check=False)


def test_cli_hides_tensorflow_start_up_noise_but_not_errors():
  quiet = _run_cli("export", "--no_such_flag", TF_GENREC_VERBOSE="0")
  assert quiet.returncode != 0
  assert "no_such_flag" in quiet.stderr
  assert not [n for n in _NOISE if n in quiet.stderr], quiet.stderr


def test_cli_verbose_keeps_tensorflow_start_up_logs():
  # The noise this hides exists: a CPU-only TF build prints it on import.
  verbose = _run_cli("export", "--help", TF_GENREC_VERBOSE="1")
  assert "--helpfull" in verbose.stdout, verbose.stdout + verbose.stderr
  assert [n for n in _NOISE if n in verbose.stderr], verbose.stderr
