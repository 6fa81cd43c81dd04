"""tools/soak.py, briefly: clients on both APIs, versions rolling out."""
import json
import os
import subprocess
import sys

import serving_testlib as tl

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_short_soak_fails_no_request_across_version_swaps(tmp_path):
  source = tl.export_toy_model(str(tmp_path / "source"), 1)
  report_path = tmp_path / "soak.json"
  subprocess.run(
      [sys.executable, "-m", "tools.soak", f"--source_version_dir={source}",
       f"--model_base_path={tmp_path / 'models'}", "--model_name=toy",
       "--clients=6", "--minutes=0.15", "--new_version_every_s=2",
       "--bucket_s=3", "--warmup_s=3", "--max_history=8",
       "--num_distinct_requests=8", f"--output_json={report_path}",
       f"--plot={tmp_path / 'soak.png'}"],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), check=True,
      timeout=480, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  report = json.loads(report_path.read_text())
  assert report["failed"] == 0, report["failure_examples"]
  assert report["server_exit_code"] == 0
  assert sum(b["grpc"] for b in report["buckets"]) > 0
  assert sum(b["rest"] for b in report["buckets"]) > 0
  assert len(report["versions_served"]) >= 3  # Swapped under load.
  assert report["rss_mb_end"] > 0
  assert (tmp_path / "soak.png").stat().st_size > 10_000
