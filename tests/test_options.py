"""Options dataclasses <-> absl flags: one default, one help, presets."""
import dataclasses
from typing import Optional

import pytest
from absl import app, flags

from tf_genrec.builders.export_recall import ExportOptions
from tf_genrec.evaluation.evaluate import EvalOptions
from tf_genrec.options import (OptionsError, define_flags, from_flags, option,
                               refused_as, run_step)
from tf_genrec.semantic_ids.build import SemanticIdOptions
from tf_genrec.semantic_ids.embed_items import EmbedOptions
from tf_genrec.training.hstu_comparison import HSTUComparisonOptions
from tf_genrec.training.presets import PRESETS, RECALL_DEFAULT, Recipe
from tf_genrec.training.random_model import RandomModelOptions
from tf_genrec.training.sasrec_baseline import SASRecBaselineOptions
from tf_genrec.training.train_generator import TrainOptions

STEP_OPTIONS = (TrainOptions, ExportOptions, EvalOptions, SemanticIdOptions,
                SASRecBaselineOptions, RandomModelOptions, EmbedOptions,
                HSTUComparisonOptions)


@dataclasses.dataclass(frozen=True)
class _Toy:
  name: str = option(None, "Required name.", required=True)
  count: int = option(3, "A count.")
  rate: Optional[float] = option(None, "A rate.")
  mode: str = option("a", "A mode.", choices=("a", "b"))
  on: bool = option(False, "A switch.")
  paths: list = option(["x"], "Paths.")
  internal: int = 7  # no help: not a flag


def _parse(options_cls, argv, **kw):
  values = flags.FlagValues()
  define_flags(options_cls, values, **kw)
  values(["prog"] + argv)
  return values


def test_one_flag_per_field_with_its_default_and_help():
  values = _parse(_Toy, ["--name=n"])
  assert {"name", "count", "rate", "mode", "on", "paths"} <= set(values)
  assert "internal" not in values
  assert values["count"].default == 3 and values["count"].help == "A count."
  assert from_flags(_Toy, values) == _Toy(name="n")
  got = from_flags(_Toy, _parse(_Toy, ["--name=n", "--count=5", "--rate=0.5",
                                       "--mode=b", "--on", "--paths=p,q"]))
  assert got == _Toy(name="n", count=5, rate=0.5, mode="b", on=True,
                     paths=["p", "q"])
  with pytest.raises(flags.IllegalFlagValueError):
    _parse(_Toy, ["--name=n", "--mode=c"])
  with pytest.raises(flags.IllegalFlagValueError, match="name"):
    _parse(_Toy, [])  # required


def test_a_base_fills_only_the_flags_not_given():
  base = _Toy(name="base", count=9, mode="b")
  got = from_flags(_Toy, _parse(_Toy, ["--name=n", "--on"]), base=base)
  assert got == dataclasses.replace(base, name="n", on=True)


@pytest.mark.parametrize("options_cls", STEP_OPTIONS)
def test_every_step_binds_every_field(options_cls):
  values = flags.FlagValues()
  define_flags(options_cls, values)
  names = {f.name for f in dataclasses.fields(options_cls)}
  assert set(values) == names
  for field in dataclasses.fields(options_cls):
    assert values[field.name].help  # help text from the field


def test_presets_are_recipes_and_train_defaults_are_recall_default():
  assert all(isinstance(p, Recipe) for p in PRESETS.values())
  assert TrainOptions(item_table="t", output_dir="o").recipe() == (
      dataclasses.asdict(RECALL_DEFAULT))
  distill = TrainOptions.from_preset("recall_distill", item_table="t",
                                     output_dir="o", epochs=3)
  assert (distill.preset, distill.distill_weight, distill.epochs) == (
      "recall_distill", 0.5, 3)
  values = _parse(TrainOptions, ["--item_table=t", "--output_dir=o",
                                 "--preset=recall_distill", "--dropout=0"])
  got = from_flags(TrainOptions, values,
                   base=TrainOptions.from_preset(values.preset))
  assert (got.distill_weight, got.epochs, got.dropout) == (0.5, 60, 0.0)
  with pytest.raises(OptionsError, match="preset must be one of"):
    TrainOptions.from_preset("nope")


def test_run_step_reports_refused_options_as_usage_errors():
  def step(options):
    raise OptionsError(f"count={options.count} must be < 2")

  with pytest.raises(app.UsageError, match="count=3 must be < 2"):
    run_step(step, _Toy(name="n"))


def test_refused_as_names_the_fields_of_a_reader_error():
  with pytest.raises(OptionsError, match=r"^item_table/codebook_size: bad K$"):
    with refused_as("item_table/codebook_size"):
      raise ValueError("bad K")
  with pytest.raises(OptionsError, match=r"^kept$"):
    with refused_as("not added"):
      raise OptionsError("kept")
