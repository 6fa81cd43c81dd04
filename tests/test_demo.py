"""The README's main job, in quick mode: every step runs and the server answers."""
import json
import re
import subprocess
import sys

from tf_genrec.data.amazon import load_dataset

ITEM_LINE = re.compile(r"^\s+\d+\. item\s+(\d+)\s+score\s+(\S+)\s+(.*)$")


def test_demo_quick_end_to_end(tmp_path):
  work = tmp_path / "demo"
  proc = subprocess.run(
      [sys.executable, "-m", "tf_genrec.cli", "demo", "--quick",
       f"--work_dir={work}"], capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-5000:]

  # The client printed, for 3 users, items served by the model with their
  # catalogue titles.
  titles = [item.title for item in load_dataset().items]
  printed = [ITEM_LINE.match(l) for l in proc.stdout.splitlines()]
  printed = [m for m in printed if m]
  assert len(printed) == 3 * 5, proc.stdout
  for m in printed:
    assert m.group(3).strip() == titles[int(m.group(1))].strip()
    assert float(m.group(2)) < 0  # a log-probability

  assert (work / "sids" / "item_table.tsv").exists()
  assert (work / "models" / "ad_recall" / "1" / "saved_model.pb").exists()
  report = json.loads((work / "generator" / "train_report.json").read_text())
  assert report["train_sequences"] > 0 and report["valid_loss"] > 0
