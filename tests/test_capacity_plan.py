"""tools/capacity_plan.py against figures worked out by hand."""
import json
import os
import subprocess
import sys

import pytest

from tools import capacity_plan

FIXTURE = os.path.join(os.path.dirname(__file__), "data",
                       "capacity_benchmark.json")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fixture():
  with open(FIXTURE, encoding="utf-8") as f:
    return json.load(f)


def test_replicas_and_memory_by_hand():
  off, on = capacity_plan.plan(_fixture(), target_qps=1000,
                               latency_budget_ms=100, utilization=0.5,
                               spare_replicas=1)
  # off: 2 clients is the best level within 100 ms (45 req/s); at 50% of
  # it, 1000 / 22.5 = 44.4 -> 45 replicas, + 1 spare = 46; 46 x 512 MiB.
  assert (off["batching"], off["qps_per_replica"], off["clients"],
          off["replicas"]) == ("off", 45.0, 2, 46)
  assert off["rss_mib_per_replica"] == 512
  assert off["total_rss_gib"] == pytest.approx(23.0)
  # on: 2 clients had an error, 4 clients sits exactly on the budget
  # (60 req/s): 1000 / 30 = 33.3 -> 34, + 1 = 35; 35 x 600 MiB.
  assert (on["qps_per_replica"], on["clients"], on["replicas"]) == (60.0, 4,
                                                                   35)
  assert on["total_rss_gib"] == pytest.approx(35 * 600 / 1024)
  assert off["model"] == "models/small" and off["saved_model_mib"] == 10.0


def test_budget_not_met_and_option_errors():
  rows = capacity_plan.plan(_fixture(), 1000, latency_budget_ms=35,
                            utilization=1.0, spare_replicas=0)
  assert [r["replicas"] for r in rows] == [None, None]
  # A tighter budget keeps only the 1-client level of mode off.
  off = capacity_plan.plan(_fixture(), 90, 50, 1.0, 0)[0]
  assert (off["qps_per_replica"], off["replicas"]) == (30.0, 3)
  with pytest.raises(ValueError, match="utilization must be in"):
    capacity_plan.plan(_fixture(), 1000, 100, 1.5, 0)
  with pytest.raises(ValueError, match="target_qps must be > 0"):
    capacity_plan.plan(_fixture(), 0, 100, 0.5, 0)


def test_cli_prints_the_table():
  out = subprocess.run(
      [sys.executable, "-m", "tools.capacity_plan", f"--benchmarks={FIXTURE}",
       "--target_qps=1000", "--utilization=0.5"],
      cwd=REPO, capture_output=True, text=True, check=True).stdout
  assert "| models/small | 10.0 | 16 | off | 45.0 (2) | 46 | 512 | 23.0 |" in out
  assert "| models/small | 10.0 | 16 | on | 60.0 (4) | 35 | 600 | 20.5 |" in out
