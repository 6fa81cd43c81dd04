"""`tf-genrec <command> [--flags]`: one entry point over the CLIs in tools/."""
import contextlib
import importlib
import os
import sys

# command -> module of the top-level tools package with an absl main().
COMMANDS = {
    "demo": "demo",
    "embed": "embed_items",
    "build_sids": "build_semantic_ids",
    "train": "train_generator",
    "train_sasrec": "train_sasrec",
    "train_hstu": "train_hstu",
    "train_two_tower": "train_two_tower",
    "make_random_model": "make_random_model",
    "export": "export",
    "build_engine": "build_engine",
    "evaluate": "evaluate",
    "evaluate_branches": "evaluate_branches",
    "serve": "serve",
    "client": "client",
    "beam_build_sids": "beam_build_sids",
    "beam_batch_recall": "beam_batch_recall",
    "beam_user_histories": "beam_user_histories",
    "capacity_plan": "capacity_plan",
    "convert": "convert_data",
}

# Set to 1 to see TensorFlow's start-up lines (CUDA probes, CPU features).
VERBOSE_ENV = "TF_GENREC_VERBOSE"


@contextlib.contextmanager
def _quiet_stderr_fd():
  """Sends file descriptor 2 to /dev/null for the block.

  TF's C++ runtime writes its CUDA probes (`cudart_stub`, `failed call to
  cuInit`) and CPU-feature banner straight to fd 2 before any logging
  configuration applies, so neither TF_CPP_MIN_LOG_LEVEL nor absl flags
  silence them; on a CPU-only machine they are noise on every command.
  Python exceptions raised inside still print: after the fd is restored.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def import_tensorflow_quietly():
  """Imports TF and probes its devices now, with the start-up noise hidden."""
  if os.environ.get(VERBOSE_ENV, "0") not in ("", "0"):
    return
  with _quiet_stderr_fd():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.list_physical_devices()  # the cuInit probe happens here


def main():
  if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    print("usage: tf-genrec {%s} [--flags]   (--helpfull on any command)\n"
          "%s=1 shows TensorFlow's start-up logs." %
          ("|".join(COMMANDS), VERBOSE_ENV))
    sys.exit(2)
  from absl import app

  import_tensorflow_quietly()
  module = importlib.import_module("tools." + COMMANDS[sys.argv[1]])
  app.run(module.main, argv=["tf-genrec " + sys.argv[1]] + sys.argv[2:])


if __name__ == "__main__":
  main()
