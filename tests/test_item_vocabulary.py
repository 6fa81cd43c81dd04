"""A model exported with an item vocabulary takes and returns the
catalogue's own ids (string or sparse int64) and answers with the same items
as the model over the item table's ids."""
import numpy as np
import pytest

from tf_genrec.builders.build import build_generative_recall
from tf_genrec.builders.export import export_saved_model
from tf_genrec.builders.export_recall import warmup_inputs
from tf_genrec.serving.servable import Servable
from tf_genrec.tables.item_vocabulary import (read_item_vocabulary,
                                              write_item_vocabulary)

from recall_testlib import (external_item_ids, random_recall_requests,
                            tiny_recall_assets, to_external)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  a = tiny_recall_assets(tmp_path_factory.mktemp("vocab"))
  model = build_generative_recall(a["config"], a["ckpt"], a["table_path"])
  a["dense_dir"] = export_saved_model(model, str(a["root"] / "dense"), 1)
  return a


@pytest.mark.parametrize("kind", ["string", "int64"])
def test_vocabulary_model_answers_in_external_ids(assets, tmp_path, kind):
  a = assets
  external = external_item_ids(kind, int(a["item_ids"].max()) + 1)
  path = str(tmp_path / "item_vocabulary.txt")
  write_item_vocabulary(path, external)
  assert read_item_vocabulary(path).tolist() == external.tolist()
  model = build_generative_recall(a["config"], a["ckpt"], a["table_path"],
                                  item_vocabulary_path=path)
  export_dir = export_saved_model(
      model, str(tmp_path / "external"), 1,
      warmup_inputs(a["config"], external[a["item_ids"]]))
  served = Servable("m", 1, export_dir)
  assert served.warmup() == 1  # the warmup request carries external ids
  dense = Servable("m", 1, a["dense_dir"])

  inputs = random_recall_requests(a, np.random.default_rng(1), 16)
  mapped = dict(inputs, item_ids=to_external(inputs["item_ids"], external))
  inputs["item_ids"][0, 0] = 999_999  # unknown to both: dropped by both
  mapped["item_ids"][0, 0] = b"no-such-sku" if kind == "string" else 5
  signature = served.signature("serving_default")
  signature.validate(mapped)
  got = served.run(signature, mapped)
  want = dense.run(dense.signature("serving_default"), inputs)

  assert (want["item_ids"] >= 0).any()
  np.testing.assert_array_equal(got["item_ids"],
                                to_external(want["item_ids"], external))
  np.testing.assert_array_equal(got["scores"], want["scores"])
  np.testing.assert_array_equal(got["semantic_ids"], want["semantic_ids"])


def test_vocabulary_must_cover_the_item_table(assets, tmp_path):
  a = assets
  path = str(tmp_path / "short.txt")
  write_item_vocabulary(path, np.array(["a", "b"], object))
  with pytest.raises(ValueError, match=r"lines of the item vocabulary .*"
                     r"in \[0, 2\)"):
    build_generative_recall(a["config"], a["ckpt"], a["table_path"],
                            item_vocabulary_path=path)
  with pytest.raises(ValueError, match=r"item id 'a b ' \(item 1\)"):
    write_item_vocabulary(path, np.array(["a", "a b "], object))
