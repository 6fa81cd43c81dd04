"""tf-genrec beam_user_histories: an event log -> user and item shards, as
one Apache Beam job (the grouping goes through the runner's shuffle).

Binds one flag per UserHistoriesOptions field (tf_genrec/pipelines/
user_histories.py, where the job and its defaults live) and runs
write_user_histories; Beam pipeline options follow `--`.

  tf-genrec beam_user_histories --data_dir=runs/sci-parquet \
      --output_dir=runs/beam/users                                # FnApiRunner
  ... -- --runner=FlinkRunner --flink_master=HOST:8081 ...        # docs/scaling.md

Writes <output_dir>/users-*.jsonl and items-*.jsonl, the --users / --items
of beam_build_sids and beam_batch_recall.
"""
import functools
import json

from absl import app

from tf_genrec.options import define_flags, from_flags, run_step
from tf_genrec.pipelines.runner import local_pipeline_options
from tf_genrec.pipelines.user_histories import (UserHistoriesOptions,
                                                write_user_histories)

define_flags(UserHistoriesOptions)


def main(argv):
  step = functools.partial(write_user_histories,
                           pipeline_options=local_pipeline_options(argv[1:]))
  print(json.dumps(run_step(step, from_flags(UserHistoriesOptions)),
                   indent=2))


if __name__ == "__main__":
  app.run(main)
