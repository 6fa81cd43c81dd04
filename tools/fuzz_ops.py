"""Fuzzes every custom op in-process with hypothesis, for a time budget each.

Each target calls one op (through its tf_genrec.ops wrapper, as the graph
does) on inputs drawn from a strategy that mostly builds well-formed
requests, so the kernels' bodies run, and often breaks them: any small shape
(rank 0-3, zero-size dims), zero-size tensors that declare a huge dim, other
dtypes, int extremes, NaN/inf scores, lengths past T or negative, random item
table files. A target passes when every call either succeeds or raises
tf.errors.InvalidArgumentError; any other exception is a finding (hypothesis
shrinks it and prints the input). Each target runs in its own process, so a
crash (a signal) or a hang (no progress for --hang_seconds) is reported
instead of ending the run; the last input tried is kept in
<out_dir>/<target>.last.pkl to reproduce it.

  nice -n 10 .venv/bin/python -m tools.fuzz_ops --seconds_per_target=600 \
      --jobs=2 --out_dir=runs/fuzz

tests/test_ops_fuzz.py runs the same targets for a few seconds each.
"""
import dataclasses
import functools
import os
import pickle
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Callable

import numpy as np
from absl import app, flags, logging
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tqdm import tqdm

FLAGS = flags.FLAGS
flags.DEFINE_list("targets", [], "Targets to fuzz; empty: all.")
flags.DEFINE_integer("seconds_per_target", 600, "Fuzzing time per target.")
flags.DEFINE_integer("jobs", 1, "Targets fuzzed at once (one process each).")
flags.DEFINE_integer("hang_seconds", 300,
                     "A target without progress for this long (incl. its "
                     "start-up) is a hang.")
flags.DEFINE_string("out_dir", "runs/fuzz",
                    "Where the last inputs and progress files go.")
flags.DEFINE_string("child", None, "Internal: fuzz this one target.")

HUGE_DIMS = (2**31 - 1, 2**31 + 1, 2**40, 2**62)
# The item table every lookup target reads: L=3, K=5, 12 items, some sharing
# one semantic ID.
TABLE_L, TABLE_K = 3, 5
TABLE_ITEMS = np.array([3, 7, 11, 2**40, -5, 0, 9, 4, 13, 21, 22, 23],
                       np.int64)


def _extremes(dtype):
  info = np.iinfo(dtype)
  return [int(info.min), int(info.min) + 1, -1, 0, 1, int(info.max) - 1,
          int(info.max)]


# Strategies are cached: building one per draw doubled the cost of a case.
@functools.lru_cache(maxsize=None)
def _ints(dtype, lo, hi):
  """Mostly [lo, hi], sometimes the dtype's extremes or any value."""
  info = np.iinfo(dtype)
  in_range = st.integers(lo, hi)
  return st.one_of(in_range, in_range, in_range, in_range,
                   st.sampled_from(_extremes(dtype)),
                   st.integers(int(info.min), int(info.max)))


@functools.lru_cache(maxsize=None)
def _from_dtype(dtype):
  return hnp.from_dtype(np.dtype(dtype))


@functools.lru_cache(maxsize=None)
def _shape(wanted):
  return _shapes(wanted)


@st.composite
def _shapes(draw, wanted):
  """Mostly `wanted`; else any small shape, or a zero-size one that declares
  a huge dim (as a few-byte request can)."""
  kind = draw(st.sampled_from(["wanted"] * 18 + ["any", "huge"]))
  if kind == "wanted":
    return tuple(wanted)
  if kind == "any":
    return tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
  shape = list(wanted) + [1] * (2 - len(wanted))
  zero, huge = draw(st.permutations(range(len(shape))))[:2]
  shape[zero] = 0
  shape[huge] = draw(st.sampled_from(HUGE_DIMS))
  return tuple(shape)


@dataclasses.dataclass(frozen=True)
class _ZeroSize:
  """A zero-size input, made as a tf.Tensor when the op runs: numpy refuses
  shapes such as [1, 0, 2**61] that TF accepts."""
  shape: tuple
  dtype: str

  def tensor(self):
    import tensorflow as tf
    return tf.zeros(self.shape, self.dtype)


@st.composite
def _array(draw, wanted_shape, dtype, elements):
  """An array of mostly `dtype` and `wanted_shape`; sometimes another dtype."""
  shape = draw(_shape(wanted_shape))
  if draw(st.integers(0, 29)) == 0:
    dtype = draw(st.sampled_from([np.int32, np.int64, np.uint64, np.float32,
                                  np.bool_]))
    elements = _from_dtype(dtype)
  if int(np.prod(shape, dtype=np.float64)) == 0:
    return _ZeroSize(shape, np.dtype(dtype).name)
  return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def behavior_sequence_cases(draw):
  b, t = draw(st.integers(0, 4)), draw(st.integers(0, 6))
  return dict(
      item_ids=draw(_array((b, t), np.int64, _ints(np.int64, -3, 9))),
      timestamps=draw(_array((b, t), np.int64, _ints(np.int64, -5, 5))),
      action_types=draw(_array((b, t), np.int32, _ints(np.int32, -1, 3))),
      lengths=draw(_array((b,), np.int32, _ints(np.int32, -2, t + 2))),
      request_time=draw(_array((b,), np.int64, _ints(np.int64, -5, 5))),
      # Attrs come from small sets: every distinct set is one more cached
      # eager kernel.
      max_len=draw(st.sampled_from([1, 2, 5])),
      allowed_action_types=draw(st.sampled_from([(), (0, 2), (-1,)])),
      max_age_seconds=draw(st.sampled_from([0, 1, 3, 2**63 - 1])),
      dedup_mode=draw(st.sampled_from(["none", "consecutive", "keep_last"])))


@st.composite
def prompt_assemble_cases(draw):
  b, t = draw(st.integers(0, 4)), draw(st.integers(0, 5))
  c, levels = draw(st.integers(0, 4)), draw(st.integers(1, 3))
  return dict(
      codes=draw(_array((b, t, levels), np.int32, _ints(np.int32, -1, 5))),
      codes_lengths=draw(_array((b,), np.int32, _ints(np.int32, -2, t + 2))),
      context_ids=draw(_array((b, c), np.int32, _ints(np.int32, -1, 30))),
      context_lengths=draw(_array((b,), np.int32,
                                  _ints(np.int32, -2, c + 2))),
      prefix_ids=draw(st.sampled_from([(), (1, 2)])),
      separator_ids=draw(st.sampled_from([(), (3,)])),
      suffix_ids=draw(st.sampled_from([(), (4, 4)])),
      sid_offset=draw(st.sampled_from([0, 10, 2**31 - 8])),
      codebook_size=draw(st.sampled_from([1, 4, 2**30])),
      pad_token_id=0,
      max_prompt_len=draw(st.sampled_from([1, 6, 40])),
      truncate=draw(st.booleans()),
      full_items=draw(st.sampled_from([0, 1, 2, 2**62])),
      old_item_levels=draw(st.sampled_from([1, 2, 2**62])))


@st.composite
def semantic_id_lookup_cases(draw):
  b, t = draw(st.integers(0, 4)), draw(st.integers(0, 6))
  return dict(item_ids=draw(_array((b, t), np.int64, _ITEM_IDS)),
              lengths=draw(_array((b,), np.int32, _ints(np.int32, -2, t + 2))),
              num_levels=draw(st.sampled_from([TABLE_L] * 5 + [1])),
              missing=draw(st.sampled_from(["drop", "error"])))


@st.composite
def codes_to_items_cases(draw):
  b, w = draw(st.integers(0, 4)), draw(st.integers(0, 8))
  levels = draw(st.sampled_from([TABLE_L] * 10 + [1, 4]))
  top_n = draw(st.one_of(_ints(np.int32, -1, 30),
                         st.sampled_from([10_000, 10_001])))
  return dict(codes=draw(_array((b, w, levels), np.int32,
                                _ints(np.int32, -1, TABLE_K))),
              beam_scores=draw(_array((b, w), np.float32, _SCORES)),
              top_n=draw(_array((), np.int32, st.just(top_n))))


_ITEM_IDS = st.one_of(st.sampled_from(TABLE_ITEMS.tolist()),
                     _ints(np.int64, -3, 30))
_SCORES = st.floats(width=32, allow_nan=True, allow_infinity=True)
# Item table file fields: mostly valid, sometimes broken.
_FILE_ID = st.one_of(st.integers(-2**63, 2**63 - 1).map(str),
                     st.sampled_from(["9223372036854775808", "1e3", "", "x",
                                      " 1"]))
_FILE_CODE = st.one_of(st.integers(0, 4).map(str),
                       st.sampled_from(["-1", "5", "2147483648", "+1", "1.5",
                                        ""]))
_FILE_PRIORITY = st.one_of(st.floats(allow_nan=False).map(str),
                           st.sampled_from(["nan", "inf", "", "1 2"]))


_VALID_FILE_LINE = st.tuples(
    st.integers(-2**63, 2**63 - 1), st.lists(st.integers(0, 4), min_size=3,
                                             max_size=3),
    st.floats(allow_nan=False)).map(
        lambda x: f"{x[0]}\t{' '.join(map(str, x[1]))}\t{x[2]}")


@st.composite
def _file_line(draw):
  kind = draw(st.integers(0, 9))
  if kind < 7:  # most lines valid, so some whole files are
    return draw(_VALID_FILE_LINE)
  if kind == 7:
    return draw(st.text(max_size=20))
  codes = draw(st.lists(_FILE_CODE, min_size=3, max_size=4))
  sep = draw(st.sampled_from([" ", " ", " ", "  ", "\t"]))
  return "\t".join([draw(_FILE_ID), sep.join(codes), draw(_FILE_PRIORITY)])


@st.composite
def item_table_file_cases(draw):
  """Random item table files: mostly well-formed lines, with fields, codes,
  ids, priorities and separators broken at random."""
  lines = draw(st.lists(_file_line(), max_size=6))
  return dict(text="\n".join(lines) + draw(st.sampled_from(["", "\n",
                                                            "\r\n"])),
              num_levels=draw(st.sampled_from([3, 3, 1, 64])),
              codebook_size=draw(st.sampled_from([1, 5, 2**31 - 1])))


class _Table:
  """The lookup targets' table, made once per process."""
  handle = None

  @classmethod
  def get(cls):
    if cls.handle is None:
      from tf_genrec.tables.item_table import write_item_table
      from tf_genrec.tables.item_table_resource import ItemTable
      rng = np.random.default_rng(0)
      codes = rng.integers(0, TABLE_K, (len(TABLE_ITEMS), TABLE_L))
      codes[1] = codes[0]
      path = os.path.join(tempfile.mkdtemp(), "items.tsv")
      write_item_table(path, TABLE_ITEMS, codes, np.arange(len(TABLE_ITEMS)))
      cls.table = ItemTable(path, TABLE_L, TABLE_K)
      cls.handle = cls.table.resource_handle
    return cls.handle


def run_behavior_sequence(case):
  from tf_genrec import ops
  ops.behavior_sequence(**case)


def run_prompt_assemble(case):
  from tf_genrec import ops
  ops.prompt_assemble(**case)


def run_semantic_id_lookup(case):
  from tf_genrec import ops
  ops.semantic_id_lookup(_Table.get(), **case)


def run_codes_to_items(case):
  from tf_genrec import ops
  ops.codes_to_items(_Table.get(), **case)


def run_item_table_file(case):
  """Init from the file and size: a malformed file is rejected (naming the
  line)."""
  import tensorflow as tf

  from tf_genrec import ops
  path = os.path.join(tempfile.gettempdir(), f"fuzz_{os.getpid()}.tsv")
  with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
    f.write(case["text"])
  # A fresh table each time, from a small pool of names: each distinct
  # shared_name is one more cached eager kernel.
  name = f"fuzz_table_{os.getpid()}_{uuid.uuid4().int % 4}"
  table = ops.item_table_handle(case["num_levels"], case["codebook_size"],
                                shared_name=name)
  try:
    ops.item_table_init_from_file(table, path)
    ops.item_table_size(table)
  finally:
    tf.raw_ops.DestroyResourceOp(resource=table, ignore_lookup_error=True)


@dataclasses.dataclass(frozen=True)
class Target:
  strategy: st.SearchStrategy
  run: Callable[[dict], None]


TARGETS = {
    "behavior_sequence": Target(behavior_sequence_cases(),
                                run_behavior_sequence),
    "prompt_assemble": Target(prompt_assemble_cases(), run_prompt_assemble),
    "semantic_id_lookup": Target(semantic_id_lookup_cases(),
                                 run_semantic_id_lookup),
    "codes_to_items": Target(codes_to_items_cases(), run_codes_to_items),
    "item_table_file": Target(item_table_file_cases(), run_item_table_file),
}


def check(target, case):
  """Runs one case: success or InvalidArgumentError, anything else raises."""
  import tensorflow as tf
  try:
    # Inside the try: TF itself rejects some zero-size shapes (more than
    # 2**63 - 1 elements counting the zero out).
    case = {k: v.tensor() if isinstance(v, _ZeroSize) else v
            for k, v in case.items()}
    target.run(case)
  except tf.errors.InvalidArgumentError:
    return False
  return True


def fuzz(name, max_examples, on_case=None, derandomize=False):
  """One hypothesis run of `max_examples` cases of target `name`; raises on
  a finding. on_case(case, accepted) sees every case; derandomize: the same
  cases every run (for tests)."""
  target = TARGETS[name]

  @settings(max_examples=max_examples, deadline=None, database=None,
            derandomize=derandomize,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck))
  @given(target.strategy)
  def run(case):
    if on_case is not None:
      on_case(case, None)
    accepted = check(target, case)
    if on_case is not None:
      on_case(case, accepted)

  run()


def _child(name, seconds, out_dir):
  """Fuzzes `name` for `seconds`; appends "executions accepted" lines to
  <out_dir>/<name>.progress every few seconds and "error <text>" on a
  finding."""
  counts = [0, 0]
  last = os.path.join(out_dir, f"{name}.last.pkl")
  progress = open(os.path.join(out_dir, f"{name}.progress"), "a",
                  encoding="utf-8", buffering=1)
  reported = [time.monotonic()]

  def on_case(case, accepted):
    if accepted is None:  # before the call: keep it in case it crashes
      with open(last, "wb") as f:
        pickle.dump(case, f)
      return
    counts[0] += 1
    counts[1] += accepted
    if time.monotonic() - reported[0] > 5:
      progress.write(f"{counts[0]} {counts[1]}\n")
      reported[0] = time.monotonic()

  end = time.monotonic() + seconds
  try:
    while time.monotonic() < end:
      fuzz(name, 200, on_case)
    progress.write(f"{counts[0]} {counts[1]}\n")
  except Exception as e:  # pylint: disable=broad-except
    progress.write(f"{counts[0]} {counts[1]}\n")
    progress.write(f"error {type(e).__name__}: {e}".replace("\n", " ") +
                   "\n")


def _read_progress(path, result):
  """Updates result from the child's progress file; returns its size."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  for line in lines:
    if line.startswith("error "):
      result["finding"] = line[len("error "):]
    elif line:
      executions, accepted = line.split()
      result.update(executions=int(executions), accepted=int(accepted))
  return len(lines)


def main(argv):
  del argv
  if FLAGS.child:
    _child(FLAGS.child, FLAGS.seconds_per_target, FLAGS.out_dir)
    return
  names = FLAGS.targets or list(TARGETS)
  unknown = set(names) - set(TARGETS)
  if unknown:
    raise app.UsageError(f"unknown targets {sorted(unknown)}; "
                         f"known: {sorted(TARGETS)}")
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  pending, running, results = list(names), {}, {}
  bar = tqdm(total=len(names) * FLAGS.seconds_per_target, unit="s",
             desc="fuzz")
  started = time.monotonic()
  while pending or running:
    while pending and len(running) < FLAGS.jobs:
      name = pending.pop(0)
      path = os.path.join(FLAGS.out_dir, f"{name}.progress")
      open(path, "w", encoding="utf-8").close()
      proc = subprocess.Popen([
          sys.executable, "-m", "tools.fuzz_ops", f"--child={name}",
          f"--seconds_per_target={FLAGS.seconds_per_target}",
          f"--out_dir={FLAGS.out_dir}"])
      now = time.monotonic()
      running[name] = [proc, path, now, now, 0]
      results[name] = dict(executions=0, accepted=0, finding=None)
    time.sleep(2)
    for name, (proc, path, start, seen, lines) in list(running.items()):
      n = _read_progress(path, results[name])
      if n > lines:
        running[name][3:] = [time.monotonic(), n]
      if proc.poll() is not None:
        if proc.returncode != 0 and results[name]["finding"] is None:
          results[name]["finding"] = (f"crash: exit code {proc.returncode}; "
                                      f"input in {name}.last.pkl")
        results[name]["seconds"] = time.monotonic() - start
        del running[name]
      elif time.monotonic() - seen > FLAGS.hang_seconds:
        proc.kill()
        proc.wait()
        results[name]["finding"] = (f"hang: no progress for "
                                    f"{FLAGS.hang_seconds} s; input in "
                                    f"{name}.last.pkl")
        results[name]["seconds"] = time.monotonic() - start
        del running[name]
    bar.n = min(bar.total, int((time.monotonic() - started) * FLAGS.jobs))
    bar.refresh()
  bar.close()
  print("\n| target | seconds | executions | accepted | rejected "
        "(InvalidArgument) | findings |")
  print("| --- | ---: | ---: | ---: | ---: | --- |")
  for name in names:
    r = results[name]
    print(f"| {name} | {r['seconds']:.0f} | {r['executions']} | "
          f"{r['accepted']} | {r['executions'] - r['accepted']} | "
          f"{r['finding'] or 0} |")
  failed = [n for n in names if results[n]["finding"]]
  if failed:
    logging.error("findings in %s", failed)
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
