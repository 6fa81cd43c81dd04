"""`tf-genrec train` on two local workers (MultiWorkerMirroredStrategy from
TF_CONFIG, CPU collectives over gRPC on 127.0.0.1) against one process, and
checkpoints resumed across worker counts."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file

from serving_testlib import free_ports
from tf_genrec.data.amazon import load_dataset
from tf_genrec.models.qwen2.checkpoint import load_hf_checkpoint
from tf_genrec.models.qwen2.config import Qwen2Config
from tf_genrec.models.qwen2.modeling import Qwen2ForCausalLM
from tf_genrec.tables.item_table import write_item_table
from tf_genrec.training import distribute
from tf_genrec.training.optimizer import AdamW, OptimizerConfig

REPO = Path(__file__).resolve().parents[1]
L, K = 3, 16
STEPS, MORE_STEPS = 6, 10
# 41 users at a global batch of 8: 6 steps an epoch, the last one a single
# sequence, so one of two workers gets no rows that step (its share is 0).
FLAGS = ("--max_users=41", "--batch_size=8", f"--codebook_size={K}",
         "--hidden_size=32", "--num_hidden_layers=1", "--intermediate_size=64",
         "--learning_rate=1e-2", "--warmup_steps=2", "--dropout=0",
         "--log_every=1", "--valid_users=16", "--valid_beam_width=8")
# The loss of a step is the mean over the global batch's SID targets under
# either worker count, on the same rows in the same order, so the curves
# differ only by float rounding: the workers pad their halves to their own
# widths (other matmul shapes, so other summation orders) and the gradient is
# the sum of two partial sums (float32 rounding, ~1e-7 relative); 1e-4 leaves
# room for the rounding to grow over the steps without hiding a real error
# (a wrong loss scaling or a worker on the wrong rows moves it by > 1e-2).
RTOL = 1e-4


def _start(item_table, output_dir, steps, workers, extra=()):
  """Starts `workers` processes of `tf-genrec train`; TF_CONFIG names them
  all when there are several."""
  command = [sys.executable, "-m", "tools.train_generator",
             f"--item_table={item_table}", f"--output_dir={output_dir}",
             f"--steps={steps}", *FLAGS, *extra]
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  # Where non-chief workers write their discarded checkpoints.
  env["TMPDIR"] = str(output_dir) + ".tmp"
  os.makedirs(env["TMPDIR"], exist_ok=True)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(workers)]}
  runs = []
  for index in range(workers):
    if workers > 1:
      env["TF_CONFIG"] = json.dumps(
          {"cluster": cluster, "task": {"type": "worker", "index": index}})
    log = open(f"{output_dir}.worker{index}.log", "w")
    runs.append((subprocess.Popen(command, cwd=REPO, env=dict(env),
                                  stdout=log, stderr=subprocess.STDOUT), log))
  return runs


def _finish(runs, deadline):
  """Waits for every process; kills all of them if one fails or hangs (a
  worker whose peer died would wait for its collectives)."""
  try:
    for proc, log in runs:
      proc.wait(timeout=max(deadline - time.time(), 1))
      assert proc.returncode == 0, Path(log.name).read_text()[-3000:]
  finally:
    for proc, log in runs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
      log.close()
  return [Path(log.name).read_text() for _, log in runs]


def _report(output_dir):
  return json.loads((Path(output_dir) / "train_report.json").read_text())


def _losses(report):
  return np.array([loss for _, loss in report["loss_curve"]])


def _hf_weights(output_dir):
  return load_file(str(Path(output_dir) / "hf" / "model.safetensors"))


def test_two_workers_train_like_one_and_resume_across_worker_counts(
    tmp_path):
  num_items = load_dataset().num_items
  codes = np.random.default_rng(0).integers(0, K, size=(num_items, L))
  table = tmp_path / "table.tsv"
  write_item_table(table, np.arange(num_items), codes)
  one, two = tmp_path / "one", tmp_path / "two"
  deadline = time.time() + 900

  runs = (_start(table, one, STEPS, workers=1) +
          _start(table, two, STEPS, workers=2))
  _finish(runs, deadline)
  r1, r2 = _report(one), _report(two)
  assert (r1["replicas"], r2["replicas"]) == (1, 2)
  assert r1["steps_run"] == r2["steps_run"] == STEPS
  assert [s for s, _ in r2["loss_curve"]] == list(range(1, STEPS + 1))
  np.testing.assert_allclose(_losses(r2), _losses(r1), rtol=RTOL)
  assert _losses(r1)[-1] < _losses(r1)[0]  # it learns
  w1, w2 = _hf_weights(one), _hf_weights(two)
  assert w1.keys() == w2.keys()
  for name in w1:
    # atol: a k_proj bias has a zero true gradient (a key offset shifts all
    # of a query's scores alike), so Adam normalises pure rounding noise
    # there (measured 1.7e-6 after 6 steps); other weights meet RTOL.
    np.testing.assert_allclose(w2[name], w1[name], rtol=RTOL, atol=1e-4,
                               err_msg=name)
  # The validation both workers ran on their (equal) weights, written once.
  assert r2["best_validation"]["step"] == STEPS
  for metric, value in r1["best_validation"]["metrics"].items():
    # A score tie broken the other way moves one of 16 users at most.
    assert abs(r2["best_validation"]["metrics"][metric] - value) <= 1 / 16
  # Only the chief wrote: the same files as one process, and the other
  # worker's scratch checkpoints are gone.
  listing = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*"))
  assert listing(two) == listing(one)
  assert not os.listdir(str(two) + ".tmp")

  # The two workers' checkpoint holds the chief's weights and optimizer
  # step, and restores into one process's variables (a different init).
  config = json.loads((two / "hf" / "config.json").read_text())
  model = Qwen2ForCausalLM(Qwen2Config.from_hf_dict(config), seed=123)
  optimizer = AdamW(OptimizerConfig(), model.trainable_variables)
  latest = tf.train.latest_checkpoint(str(two / "checkpoints"))
  assert latest.endswith(f"ckpt-{STEPS}")
  tf.train.Checkpoint(model=model, optimizer=optimizer).restore(
      latest).assert_existing_objects_matched()
  assert int(optimizer.step) == STEPS
  saved = load_hf_checkpoint(str(two / "hf"))
  for restored, reference in zip(model.trainable_variables,
                                 saved.trainable_variables):
    np.testing.assert_array_equal(restored.numpy(), reference.numpy(),
                                  err_msg=restored.name)

  # Each run resumes under the other worker count and continues the same.
  two_then_one, one_then_two = tmp_path / "two_then_one", tmp_path / "one_then_two"
  shutil.copytree(two, two_then_one)
  shutil.copytree(one, one_then_two)
  runs = (_start(table, two_then_one, MORE_STEPS, workers=1) +
          _start(table, one_then_two, MORE_STEPS, workers=2))
  logs = _finish(runs, deadline)
  for log in logs:
    assert f"ckpt-{STEPS} at step {STEPS}" in log
  a, b = _report(two_then_one), _report(one_then_two)
  assert (a["replicas"], b["replicas"]) == (1, 2)
  assert a["steps_run"] == b["steps_run"] == MORE_STEPS
  assert ([s for s, _ in a["loss_curve"]] ==
          list(range(STEPS + 1, MORE_STEPS + 1)))
  np.testing.assert_allclose(_losses(b), _losses(a), rtol=RTOL)


def test_tf_config_picks_the_strategy(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert distribute.strategy_from_env() is tf.distribute.get_strategy()
  one = {"cluster": {"worker": ["127.0.0.1:1"]},
         "task": {"type": "worker", "index": 0}}
  monkeypatch.setenv("TF_CONFIG", json.dumps(one))
  assert distribute.strategy_from_env() is tf.distribute.get_strategy()
  ps = {"cluster": {"worker": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"]},
        "task": {"type": "worker", "index": 0}}
  monkeypatch.setenv("TF_CONFIG", json.dumps(ps))
  with pytest.raises(ValueError, match=r"must be \('chief', 'worker'\).*'ps'"):
    distribute.strategy_from_env()
  monkeypatch.setenv("TF_CONFIG", "{cluster")
  with pytest.raises(ValueError, match="TF_CONFIG is not JSON"):
    distribute.strategy_from_env()
