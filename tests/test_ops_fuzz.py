"""Every custom op under hypothesis (tools/fuzz_ops.py's targets, a few
seconds each): no crash, and every rejection an InvalidArgumentError."""
import pytest

from tools import fuzz_ops


@pytest.mark.parametrize("name", sorted(fuzz_ops.TARGETS))
def test_op_survives_fuzzing(name):
  outcomes = []
  fuzz_ops.fuzz(name, max_examples=150,
                on_case=lambda case, accepted: outcomes.append(accepted),
                derandomize=True)
  accepted = [a for a in outcomes if a is not None]
  assert len(accepted) >= 150
  # The strategies reach the kernels' bodies, not only their input checks.
  assert sum(accepted) >= 0.05 * len(accepted)
