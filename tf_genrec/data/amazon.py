"""`load_dataset`, the one loader every tool calls, the reader of the bundled
layout, and the leave-one-out split.

`--data_dir` names the bundled layout below or an event log with its
catalogue in TFRecord / Parquet / CSV / JSONL (tf_genrec/data/spec.py and
events.py; docs/integration.md).

A dataset directory holds `<Name>.inter.json` ({"<user>": [item, ...]} oldest
first), `<Name>.item.json` ({"<item>": {"title", ...}}) and optionally
`<Name>.timestamps.json` ({"<user>": [unix seconds, ...]} parallel to the
interactions); `<Name>` is found from the directory (e.g. amazon-scientific:
Scientific, amazon-office: Office). Item indices in the files are the item ids
everywhere in the project. The generative tools feed positions as the
behaviour timestamps either way (prompts carry no time); `Dataset.timestamps`
feeds HSTU's time bias (`leave_one_out(histories, timestamps)`).
"""
import dataclasses
import json
from pathlib import Path
from typing import Optional

import numpy as np

from tf_genrec.data.dataset import MIN_HISTORY, Dataset, ItemInfo
from tf_genrec.data.events import load_event_dataset
from tf_genrec.data.ragged import Ragged
from tf_genrec.data.spec import DataSpec, parse_data_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = "../shared/datasets/amazon-scientific"
INTER_SUFFIX = ".inter.json"
ITEM_SUFFIX = ".item.json"
TIMESTAMPS_SUFFIX = ".timestamps.json"


def resolve_data_dir(data_dir=None) -> Path:
  """Relative paths are taken from the repository root, not the cwd."""
  path = Path(data_dir or DEFAULT_DATA_DIR)
  return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def _dense_index(mapping: dict, field: str, path: Path) -> list:
  """{"0": x, "1": y, ...} -> [x, y, ...]; keys must be exactly 0..n-1."""
  keys = sorted(int(k) for k in mapping)
  if keys != list(range(len(keys))):
    raise ValueError(f"{path}: {field} keys must be 0..{len(keys) - 1} "
                     "without gaps")
  return [mapping[str(k)] for k in keys]


def dataset_name(data_dir=None) -> str:
  """The <Name> of the one `<Name>.inter.json` in the dataset directory."""
  root = resolve_data_dir(data_dir)
  names = sorted(p.name[:-len(INTER_SUFFIX)]
                 for p in root.glob("*" + INTER_SUFFIX))
  if len(names) != 1:
    raise ValueError(f"{root}: expected exactly one <Name>{INTER_SUFFIX}, "
                     f"found {len(names)} ({names})")
  return names[0]


def item_file(data_dir=None) -> Path:
  """Path of the dataset's `<Name>.item.json` (the item catalogue)."""
  root = resolve_data_dir(data_dir)
  return root / (dataset_name(root) + ITEM_SUFFIX)


def _load_json_list(path: Path, field: str) -> list:
  with open(path, encoding="utf-8") as f:
    return _dense_index(json.load(f), field, path)


def is_bundled_layout(data_dir=None) -> bool:
  root = resolve_data_dir(data_dir)
  return root.is_dir() and any(root.glob("*" + INTER_SUFFIX))


def event_log_spec(data_dir=None) -> DataSpec:
  """The event log `--data_dir` names (spec.py); the bundled layout is not
  one."""
  if is_bundled_layout(data_dir):
    raise ValueError(f"{resolve_data_dir(data_dir)} is the bundled layout, "
                     "not an event log; `tf-genrec convert --to=parquet` "
                     "writes it as one")
  return parse_data_spec(str(data_dir or DEFAULT_DATA_DIR), REPO_ROOT)


def load_dataset(data_dir=None) -> Dataset:
  """The dataset `--data_dir` names: bundled layout or event log (spec.py)."""
  if is_bundled_layout(data_dir):
    return _load_bundled(resolve_data_dir(data_dir))
  return load_event_dataset(event_log_spec(data_dir))


def _load_bundled(root: Path) -> Dataset:
  """Reads <Name>.inter.json, <Name>.item.json (+ <Name>.timestamps.json)."""
  name = dataset_name(root)
  items = [ItemInfo(title=r.get("title") or "",
                    description=r.get("description") or "",
                    brand=r.get("brand") or "",
                    categories=r.get("categories") or "")
           for r in _load_json_list(item_file(root), "item")]
  inter_path = root / (name + INTER_SUFFIX)
  histories = Ragged.from_rows(_load_json_list(inter_path, "user"))
  outside = (histories.values < 0) | (histories.values >= len(items))
  if outside.any():
    user = int(np.searchsorted(histories.ends, np.argmax(outside), "right"))
    raise ValueError(f"{inter_path}: user {user} has an item id "
                     f"outside [0, {len(items)})")
  timestamps = None
  time_path = root / (name + TIMESTAMPS_SUFFIX)
  if time_path.exists():
    timestamps = Ragged.from_rows(_load_json_list(time_path, "user"))
    if len(timestamps) != len(histories):
      raise ValueError(f"{time_path}: {len(timestamps)} users, "
                       f"{inter_path.name} has {len(histories)}")
    for user, (h, t) in enumerate(zip(histories, timestamps)):
      if len(t) != len(h) or np.any(np.diff(t) < 0):
        raise ValueError(f"{time_path}: user {user} has {len(t)} timestamps "
                         f"for {len(h)} items or they decrease; they must be "
                         "parallel to the interactions, non-decreasing")
  return Dataset(histories=histories, items=items, name=name,
                 timestamps=timestamps)


@dataclasses.dataclass(frozen=True)
class LeaveOneOutSplit:
  """Per user u: train = h[:-2], validation target h[-2], test target h[-1].

  Validation inputs are the training history; test inputs are the training
  history plus the validation item (what the user had seen before the test
  item), h[:-1]. Both are views of the histories (data/ragged.py).
  """
  train: Ragged  # per user: int64 h[:-2]
  test_inputs: Ragged  # per user: int64 h[:-1]
  valid_targets: np.ndarray  # [num_users] int64
  test_targets: np.ndarray  # [num_users] int64
  # The timestamps of train and test_inputs' items, when split with them.
  train_times: Optional[Ragged] = None
  test_input_times: Optional[Ragged] = None

  @property
  def valid_inputs(self) -> Ragged:
    return self.train

  def fit_histories(self, refit: bool = False) -> Ragged:
    """What a model may train on: h[:-2], or with refit h[:-1].

    refit is for the final test-time model: hyper-parameters are chosen on
    validation first, then the model is trained again on everything the
    user did before the test target, as a production model trains on all
    logs up to now. Every method compared on test must be fitted alike.
    """
    return self.test_inputs if refit else self.train

  def inputs_and_targets(self, split: str):
    """("valid" | "test") -> (input histories, [num_users] targets)."""
    if split == "valid":
      return self.valid_inputs, self.valid_targets
    if split == "test":
      return self.test_inputs, self.test_targets
    raise ValueError(f"split must be 'valid' or 'test', got {split!r}")

  def input_times(self, split: str) -> Optional[Ragged]:
    """("valid" | "test") -> the timestamps parallel to its inputs (None
    when split without timestamps)."""
    self.inputs_and_targets(split)  # checks the name
    return self.train_times if split == "valid" else self.test_input_times


def _inputs(rows: Ragged):
  """(h[:-2], h[:-1]): the train (= validation) and test inputs of rows."""
  return rows.shortened(2), rows.shortened(1)


def leave_one_out(histories, timestamps=None) -> LeaveOneOutSplit:
  """The split of histories, and of the timestamps parallel to them."""
  histories = Ragged.from_rows(histories)
  short = np.flatnonzero(histories.lengths < MIN_HISTORY)
  if short.size:
    raise ValueError(f"history of user {short[0]} has "
                     f"{histories.lengths[short[0]]} items; "
                     f"leave-one-out needs >= {MIN_HISTORY}")
  times = (None, None)
  if timestamps is not None:
    timestamps = Ragged.from_rows(timestamps)
    if not np.array_equal(timestamps.lengths, histories.lengths):
      raise ValueError("timestamps must be parallel to the histories: "
                       f"{len(timestamps)} rows for {len(histories)} users, "
                       "one timestamp per item")
    times = _inputs(timestamps)
  train, test_inputs = _inputs(histories)
  return LeaveOneOutSplit(
      train=train, test_inputs=test_inputs, valid_targets=histories.last(2),
      test_targets=histories.last(1), train_times=times[0],
      test_input_times=times[1])


def item_popularity(histories, num_items: int) -> np.ndarray:
  """[num_items] float32 interaction counts (pass the training split only)."""
  counts = np.zeros(num_items, np.int64)
  for block in Ragged.from_rows(histories).blocks():
    counts += np.bincount(block, minlength=num_items)
  return counts.astype(np.float32)
