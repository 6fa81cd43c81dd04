"""Options dataclasses of the pipeline steps and their absl flags.

Each pipeline step is a library function taking one frozen options dataclass
(`train_generator(TrainOptions)`, `export_recall_model(ExportOptions)`, ...);
the field's default is the step's one default and its `help` metadata the
flag's help text. A tool in tools/ only defines one flag per field
(`define_flags`), builds the dataclass from them (`from_flags`) and calls the
step, so a flag and the library cannot disagree on a default.

A step raises OptionsError for options it refuses (naming the field, the
value and the limit); `run_step` turns it into absl's UsageError so a CLI
prints the message without a traceback.
"""
import contextlib
import dataclasses
import types
import typing

from absl import app, flags

# The flags define_flags creates belong to the tool that calls it: its
# --helpshort lists them as that module's key flags, as if it had defined
# them itself.
flags.disclaim_key_flags()


class OptionsError(ValueError):
  """Options a pipeline step refuses; the message names the field."""


@contextlib.contextmanager
def refused_as(fields: str):
  """A ValueError raised in the block (by a reader checking a file against
  the options) becomes an OptionsError prefixed with the fields involved."""
  try:
    yield
  except OptionsError:
    raise
  except ValueError as e:
    raise OptionsError(f"{fields}: {e}") from e


def option(default, help, *, choices=None, required=False):  # pylint: disable=redefined-builtin
  """A dataclass field with its flag's help (and enum choices)."""
  metadata = {"help": help, "choices": choices, "required": required}
  if isinstance(default, (list, dict)):
    return dataclasses.field(default_factory=lambda: type(default)(default),
                             metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def _base_type(annotation):
  """int for int and Optional[int]; list for list[str]."""
  if isinstance(annotation, str):
    raise TypeError(f"options field annotation {annotation!r}: use real "
                    "types (no `from __future__ import annotations`)")
  args = [a for a in typing.get_args(annotation) if a is not type(None)]
  if typing.get_origin(annotation) in (typing.Union, types.UnionType):
    return _base_type(args[0])
  return typing.get_origin(annotation) or annotation


def define_flags(options_cls, flag_values=flags.FLAGS, defaults=None):
  """Defines one absl flag per field of options_cls (same name and default).

  defaults: optional {field: value} shown as the flag default instead of
  the field's (e.g. a preset's); the dataclass default stays the library's.
  """
  required = []
  for field in dataclasses.fields(options_cls):
    meta = field.metadata
    if "help" not in meta:
      continue  # Not a command-line option.
    default = (defaults or {}).get(field.name, field.default)
    if default is dataclasses.MISSING:
      default = (field.default_factory()
                 if field.default_factory is not dataclasses.MISSING else None)
    kind = _base_type(field.type)
    args = (field.name, default, meta["help"])
    if meta["choices"]:
      flags.DEFINE_enum(field.name, default, list(meta["choices"]),
                        meta["help"], flag_values=flag_values)
    elif kind is bool:
      flags.DEFINE_bool(*args, flag_values=flag_values)
    elif kind is int:
      flags.DEFINE_integer(*args, flag_values=flag_values)
    elif kind is float:
      flags.DEFINE_float(*args, flag_values=flag_values)
    elif kind is list:
      flags.DEFINE_list(*args, flag_values=flag_values)
    elif kind is str:
      flags.DEFINE_string(*args, flag_values=flag_values)
    else:
      raise TypeError(f"{options_cls.__name__}.{field.name}: no flag type "
                      f"for {field.type}")
    if meta["required"]:
      required.append(field.name)
  flags.mark_flags_as_required(required, flag_values=flag_values)


def from_flags(options_cls, flag_values=flags.FLAGS, base=None):
  """options_cls from the flags define_flags made.

  base: options whose values stand for every flag not given on the command
  line (a preset); without it every flag's value is taken.
  """
  values = {}
  for field in dataclasses.fields(options_cls):
    if "help" not in field.metadata:
      continue
    flag = flag_values[field.name]
    if base is None or flag.present:
      values[field.name] = flag.value
  if base is None:
    return options_cls(**values)
  return dataclasses.replace(base, **values)


def run_step(step, options):
  """step(options) for a tool's main; OptionsError -> UsageError."""
  try:
    return step(options)
  except OptionsError as e:
    raise app.UsageError(str(e)) from e
