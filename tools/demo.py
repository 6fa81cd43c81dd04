"""tf-genrec demo: the README's main job, end to end on the bundled dataset.

item text -> embeddings -> semantic IDs (RQ-VAE) -> train a small Qwen2
generator -> export one SavedModel -> evaluate it -> serve it over the TF
Serving API -> query it with the client -> recommendations with titles.

Each step is the project's own CLI, run as a subprocess exactly as a user
would; finished steps are reused on a re-run (--fresh starts over).
--quick shrinks every step for the tests.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import grpc
from absl import flags, logging
from tensorflow_serving.apis import (get_model_status_pb2,
                                     model_service_pb2_grpc)

from tf_genrec.data.amazon import (item_file, leave_one_out,
                                   load_dataset, resolve_data_dir)

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", "runs/demo", "Where every artefact goes.")
flags.DEFINE_string("data_dir", None, "Dataset directory (default: "
                    "../shared/datasets/amazon-scientific from the repo).")
flags.DEFINE_bool("quick", False, "Small, fast settings (tests).")
flags.DEFINE_bool("fresh", False, "Redo every step.")
flags.DEFINE_integer("num_users_shown", 3, "Test users queried at the end.")

MODEL_NAME = "ad_recall"


def _run(args, log_name):
  """Runs `tf-genrec <args>`; output goes to the step's log file too."""
  cmd = [sys.executable, "-m", "tf_genrec.cli"] + args
  logging.info("$ tf-genrec %s", " ".join(args))
  log_path = os.path.join(FLAGS.work_dir, "logs", log_name + ".log")
  with open(log_path, "w") as log:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
  log_tail = open(log_path).read()[-3000:]
  if proc.returncode:
    raise RuntimeError(f"tf-genrec {args[0]} failed ({proc.returncode}); "
                       f"see {log_path}:\n{log_tail}")
  return proc.stdout


def _step(name, output, args):
  if os.path.exists(output) and not FLAGS.fresh:
    logging.info("%s: reusing %s", name, output)
    return None
  return _run(args, name)


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _wait_available(port, timeout_s=300):
  """Polls ModelService.GetModelStatus until the model is AVAILABLE."""
  deadline = time.time() + timeout_s
  with grpc.insecure_channel(f"localhost:{port}") as channel:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL_NAME
    while time.time() < deadline:
      try:
        status = stub.GetModelStatus(request, timeout=5)
        if any(v.state == v.AVAILABLE for v in status.model_version_status):
          return
      except grpc.RpcError:
        pass
      time.sleep(1)
  raise TimeoutError(f"model {MODEL_NAME} not AVAILABLE on port {port}")


def main(argv):
  del argv
  quick = FLAGS.quick
  work = FLAGS.work_dir
  if FLAGS.fresh and os.path.exists(work):
    shutil.rmtree(work)
  os.makedirs(os.path.join(work, "logs"), exist_ok=True)
  data_dir = str(resolve_data_dir(FLAGS.data_dir))
  sids_dir = os.path.join(work, "sids")
  embeddings = os.path.join(sids_dir, "item_embeddings.npy")
  item_table = os.path.join(sids_dir, "item_table.tsv")
  gen_dir = os.path.join(work, "generator")
  base_path = os.path.abspath(os.path.join(work, "models", MODEL_NAME))

  _step("embed", embeddings, ["embed", f"--data_dir={data_dir}",
                              f"--output={embeddings}"])
  _step("build_sids", item_table, [
      "build_sids", f"--data_dir={data_dir}", f"--embeddings={embeddings}",
      f"--output_dir={sids_dir}", f"--epochs={50 if quick else 500}"])
  _step("train", os.path.join(gen_dir, "hf", "config.json"), [
      "train", f"--data_dir={data_dir}", f"--item_table={item_table}",
      # The short schedule of docs/quality.md (minutes on 2 cores); the
      # tool's defaults are the longer, better one.
      # No validation passes either: the final model is kept.
      f"--output_dir={gen_dir}", f"--steps={40 if quick else 1000}",
      "--dropout=0", "--item_drop_rate=0", "--eval_every_epochs=0"] +
        (["--max_users=500", "--hidden_size=64", "--num_hidden_layers=2",
          "--intermediate_size=128"] if quick else []))
  if os.path.exists(base_path):
    shutil.rmtree(base_path)
  beam_width = 32 if quick else 256
  _run(["export", "--graph=ad_recall",
        f"--checkpoint_dir={os.path.join(gen_dir, 'hf')}",
        f"--item_table={item_table}", f"--export_base_path={base_path}",
        f"--model_name={MODEL_NAME}", "--version=1",
        f"--max_beam_width={beam_width}", f"--default_beam_width={beam_width}",
        # The C++ engine op: faster than the TF-native generator side by
        # side (docs/benchmarks.md, "Generator engine op").
        "--engine=cpu",
        # Recommend what the user has not clicked yet (docs/quality.md).
        "--default_top_n=50", "--exclude_history"], "export")
  export_dir = os.path.join(base_path, "1")
  report = _run(["evaluate", f"--data_dir={data_dir}",
                 f"--saved_model_dir={export_dir}", "--split=valid",
                 f"--beam_width={beam_width}", "--exclude_history",
                 f"--max_users={300 if quick else 0}"], "evaluate")
  logging.info("validation metrics: %s", report.strip())

  # Serve the exported model and query it like any TF Serving client.
  dataset = load_dataset(data_dir)
  split = leave_one_out(dataset.histories)
  users = [{"item_ids": [int(i) for i in h],
            "timestamps": list(range(1, len(h) + 1)),
            "action_types": [0] * len(h), "request_time": len(h) + 1}
           for h in split.test_inputs[:FLAGS.num_users_shown]]
  users_file = os.path.join(work, "demo_users.json")
  with open(users_file, "w") as f:
    json.dump(users, f)
  port = _free_port()
  server_log = open(os.path.join(work, "logs", "serve.log"), "w")
  server = subprocess.Popen(
      [sys.executable, "-m", "tf_genrec.cli", "serve", f"--port={port}",
       f"--model_name={MODEL_NAME}", f"--model_base_path={base_path}"],
      stdout=server_log, stderr=subprocess.STDOUT)
  try:
    _wait_available(port)
    print(_run(["client", f"--server=localhost:{port}",
                f"--model_name={MODEL_NAME}", f"--user_json={users_file}",
                f"--catalogue={item_file(data_dir)}",
                "--top_k_print=5"], "client"))
    for n, (user, target) in enumerate(zip(users, split.test_targets)):
      print(f"user {n} clicked, most recent last:")
      for item in user["item_ids"][-3:]:
        print(f"    item {item:8d}  {dataset.items[item].title}")
      print(f"  held-out next item {target}: {dataset.items[target].title}")
  finally:
    server.terminate()
    server.wait(timeout=60)
    server_log.close()


if __name__ == "__main__":
  from absl import app
  app.run(main)
