"""`tf-genrec <command> [--flags]`: one entry point over the CLIs in tools/."""
import importlib
import sys

# command -> module in tools/ (installed as tf_genrec.tools) with an absl main().
COMMANDS = {
    "demo": "demo",
    "embed": "embed_items",
    "build_sids": "build_semantic_ids",
    "train": "train_generator",
    "train_sasrec": "train_sasrec",
    "train_two_tower": "train_two_tower",
    "make_random_model": "make_random_model",
    "export": "export",
    "evaluate": "evaluate",
    "evaluate_branches": "evaluate_branches",
    "serve": "serve",
    "client": "client",
}


def main():
  if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    print("usage: tf-genrec {%s} [--flags]   (--helpfull on any command)" %
          "|".join(COMMANDS))
    sys.exit(2)
  from absl import app

  module = importlib.import_module("tf_genrec.tools." + COMMANDS[sys.argv[1]])
  app.run(module.main, argv=["tf-genrec " + sys.argv[1]] + sys.argv[2:])


if __name__ == "__main__":
  main()
