"""tf-genrec export: checkpoint + item table + scene -> versioned SavedModel.

Binds one flag per ExportOptions field (tf_genrec/builders/export_recall.py,
where the step and its defaults live) and runs export_recall_model.

  tf-genrec export --graph=ad_recall --checkpoint_dir=runs/demo/generator \
    --item_table=runs/demo/sids/item_table.tsv \
    --export_base_path=runs/demo/models/ad_recall --version=1
  tf-genrec export --graph=hstu_retrieval --checkpoint_dir=runs/hstu/model \
    --export_base_path=runs/hstu/models/hstu_retrieval --version=1

--graph=ad_recall_multi also needs --branches=<branches.json> (classic
branches beside the generative one, their quotas; docs/integration.md).
"""
import json

from absl import app

from tf_genrec.builders.export_recall import ExportOptions, export_recall_model
from tf_genrec.options import define_flags, from_flags, run_step

define_flags(ExportOptions)


def main(argv):
  del argv
  path = run_step(export_recall_model, from_flags(ExportOptions))
  print(json.dumps({"export_dir": path}))


if __name__ == "__main__":
  app.run(main)
