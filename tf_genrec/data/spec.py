"""What `--data_dir` names: a dataset's files, formats and field names.

`--data_dir` takes `[<format>:]<directory or file pattern>`:

- a directory in the bundled layout (`<Name>.inter.json`, data/amazon.py);
- a directory with `dataset.json` (a DataSpec as JSON, paths relative to
  the directory), for other file names, field names or action filters;
- a directory holding `events*.{tfrecord,tfrecord.gz,parquet,csv}` and one
  catalogue `items.{jsonl,csv,parquet}`;
- a file pattern of event files (`/logs/day=*/part-*.parquet`); the
  catalogue is the `items.*` file in the directory above the pattern's
  first wildcard (or the pattern's own directory).

The format comes from the file extension unless named by the prefix.
"""
import dataclasses
import glob
import json
import os
from pathlib import Path

EVENT_FORMATS = ("tfrecord", "parquet", "csv")
CATALOGUE_FORMATS = ("jsonl", "csv", "parquet")
MANIFEST = "dataset.json"
# The event fields a log must have; action_type is optional.
EVENT_FIELDS = ("user_id", "item_id", "timestamp", "action_type")
_EVENT_EXTENSIONS = {".tfrecord": "tfrecord", ".tfrecord.gz": "tfrecord",
                     ".tfrecords": "tfrecord", ".parquet": "parquet",
                     ".csv": "csv"}
_CATALOGUE_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv",
                         ".parquet": "parquet"}


def _extension_format(path: str, extensions: dict, what: str) -> str:
  name = os.path.basename(path).lower()
  for ext in sorted(extensions, key=len, reverse=True):
    if name.endswith(ext):
      return extensions[ext]
  raise ValueError(f"{what} {path!r}: cannot tell the format from the "
                   f"extension (one of {sorted(extensions)}); name it, e.g. "
                   f"--data_dir={extensions[sorted(extensions)[0]]}:<path>")


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """An event log and its catalogue, validated in one place (`validate`)."""
  events: str  # file pattern of the event log
  items: str  # catalogue file
  events_format: str = ""  # "" = from the extension
  items_format: str = ""
  # Event field -> the name the files use (e.g. {"user_id": "uid"}).
  fields: dict = dataclasses.field(default_factory=dict)
  # Keep only events whose action_type is one of these ([] = all).
  actions: list = dataclasses.field(default_factory=list)
  name: str = ""

  def field(self, name: str) -> str:
    return self.fields.get(name, name)

  def event_files(self) -> list:
    files = sorted(glob.glob(self.events))
    if not files:
      raise ValueError(f"events: no file matches {self.events!r}")
    return files

  def validate(self) -> "DataSpec":
    """Fills the formats from the extensions; raises naming what is wrong."""
    unknown = set(self.fields) - set(EVENT_FIELDS)
    if unknown:
      raise ValueError(f"fields: unknown event field(s) {sorted(unknown)}; "
                       f"the fields are {list(EVENT_FIELDS)}")
    files = self.event_files()
    events_format = self.events_format or _extension_format(
        files[0], _EVENT_EXTENSIONS, "events file")
    items_format = self.items_format or _extension_format(
        self.items, _CATALOGUE_EXTENSIONS, "catalogue")
    if events_format not in EVENT_FORMATS:
      raise ValueError(f"events_format {events_format!r} is not one of "
                       f"{EVENT_FORMATS}")
    if items_format not in CATALOGUE_FORMATS:
      raise ValueError(f"items_format {items_format!r} is not one of "
                       f"{CATALOGUE_FORMATS}")
    if not os.path.isfile(self.items):
      raise ValueError(f"items: catalogue file {self.items!r} not found")
    return dataclasses.replace(self, events_format=events_format,
                               items_format=items_format,
                               actions=list(self.actions))


def _catalogue_in(directory: Path) -> str:
  found = sorted(str(p) for p in directory.iterdir()
                 if p.name.split(".")[0] in ("items", "catalogue")
                 and p.is_file())
  if len(found) != 1:
    raise ValueError(f"{directory}: expected one catalogue items.<jsonl|csv|"
                     f"parquet>, found {len(found)} ({found})")
  return found[0]


def _manifest_spec(directory: Path) -> DataSpec:
  with open(directory / MANIFEST, encoding="utf-8") as f:
    config = json.load(f)
  names = {f.name for f in dataclasses.fields(DataSpec)}
  unknown = set(config) - names
  if unknown:
    raise ValueError(f"{directory / MANIFEST}: unknown key(s) "
                     f"{sorted(unknown)}; the keys are {sorted(names)}")
  for key in ("events", "items"):
    if key not in config:
      raise ValueError(f"{directory / MANIFEST}: {key!r} is required")
    config[key] = str(directory / config[key])
  config.setdefault("name", directory.name)
  return DataSpec(**config)


def parse_data_spec(data: str, root: Path) -> DataSpec:
  """`[<format>:]<directory or pattern>` of a log dataset -> DataSpec.

  Relative paths are taken from `root`. The bundled layout is not a
  DataSpec (data/amazon.py reads it); callers check for it first.
  """
  events_format = ""
  prefix, sep, rest = data.partition(":")
  if sep and prefix in EVENT_FORMATS:
    events_format, data = prefix, rest
  path = Path(data) if os.path.isabs(data) else root / data
  if path.is_dir():
    if (path / MANIFEST).is_file():
      spec = _manifest_spec(path)
      if events_format:
        spec = dataclasses.replace(spec, events_format=events_format)
      return spec.validate()
    pattern = str(path / "events*")
    formats = {events_format} if events_format else {
        _extension_format(e, _EVENT_EXTENSIONS, "events file")
        for e in glob.glob(pattern)}
    if not glob.glob(pattern):
      raise ValueError(f"{path}: neither <Name>.inter.json (bundled layout), "
                       f"{MANIFEST} nor events* files")
    if len(formats) > 1:
      raise ValueError(f"{pattern}: event files of several formats "
                       f"{sorted(formats)}; keep one")
    return DataSpec(events=pattern, items=_catalogue_in(path),
                    events_format=events_format, name=path.name).validate()
  pattern = str(path)
  wildcard = min((i for i, c in enumerate(pattern) if c in "*?["),
                 default=len(pattern))
  directory = Path(os.path.dirname(pattern[:wildcard]))
  if not directory.is_dir():
    raise ValueError(f"--data_dir {data!r}: no such dataset directory or "
                     "event file pattern")
  return DataSpec(events=pattern, items=_catalogue_in(directory),
                  events_format=events_format,
                  name=directory.name).validate()
