"""Dataset reader (shared layout) and leave-one-out split, on the real files
and on generated ones."""
import numpy as np
import pytest
from dataset_testlib import write_dataset

from tf_genrec.data.amazon import (ItemInfo, dataset_name, item_file,
                                   item_popularity, leave_one_out,
                                   load_dataset, resolve_data_dir)
from tf_genrec.data.ragged import Ragged

# From the dataset README.
NUM_USERS, NUM_ITEMS, NUM_INTERACTIONS = 8317, 4344, 58492


@pytest.fixture(scope="module")
def dataset():
  return load_dataset()


def test_counts_match_readme(dataset):
  assert dataset.num_users == NUM_USERS
  assert dataset.num_items == NUM_ITEMS
  assert dataset.num_interactions == NUM_INTERACTIONS
  assert min(len(h) for h in dataset.histories) >= 5
  every_item = np.unique(np.concatenate(dataset.histories))
  np.testing.assert_array_equal(every_item, np.arange(NUM_ITEMS))


def test_histories_keep_file_order(dataset):
  # The first lines of Scientific.inter.json, oldest first.
  np.testing.assert_array_equal(dataset.histories[0], np.arange(9))
  np.testing.assert_array_equal(dataset.histories[1], [9, 10, 11, 12, 6])


def test_item_text(dataset):
  item = dataset.items[1]
  assert item.title.startswith("Stanley TRA708T")
  text = item.text()
  assert item.title in text and item.categories in text and item.brand in text
  assert item.description not in text
  assert item.description in item.text(include_description=True)


def test_leave_one_out(dataset):
  split = leave_one_out(dataset.histories)
  assert split.valid_targets.shape == split.test_targets.shape == (NUM_USERS,)
  assert (sum(len(h) for h in split.train)
          == NUM_INTERACTIONS - 2 * NUM_USERS)
  for user in (0, 1, 4000, NUM_USERS - 1):
    h = dataset.histories[user]
    np.testing.assert_array_equal(split.train[user], h[:-2])
    assert split.valid_targets[user] == h[-2]
    assert split.test_targets[user] == h[-1]
    inputs, targets = split.inputs_and_targets("test")
    np.testing.assert_array_equal(inputs[user], h[:-1])
    assert targets[user] == h[-1]
    inputs, targets = split.inputs_and_targets("valid")
    np.testing.assert_array_equal(inputs[user], h[:-2])
    assert targets[user] == h[-2]
    # A refit trains on everything before the test target, never on it.
    np.testing.assert_array_equal(split.fit_histories()[user], h[:-2])
    np.testing.assert_array_equal(split.fit_histories(refit=True)[user],
                                  h[:-1])
  with pytest.raises(ValueError, match="split must be"):
    split.inputs_and_targets("train")


def test_leave_one_out_rejects_short_history():
  with pytest.raises(ValueError, match="user 1 has 2 items"):
    leave_one_out([[1, 2, 3], [4, 5]])


def test_item_popularity():
  counts = item_popularity([np.array([0, 2, 2]), np.array([2, 3])], 5)
  np.testing.assert_array_equal(counts, [1, 0, 3, 1, 0])


def test_data_dir_is_relative_to_repo_not_cwd(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert (resolve_data_dir() / "Scientific.inter.json").exists()
  assert resolve_data_dir(tmp_path) == tmp_path


def test_bad_files_name_the_problem(tmp_path):
  (tmp_path / "Scientific.item.json").write_text(
      '{"0": {"title": "a"}, "1": {"title": "b"}}')
  (tmp_path / "Scientific.inter.json").write_text('{"0": [0, 1, 7]}')
  with pytest.raises(ValueError, match="user 0 has an item id outside"):
    load_dataset(tmp_path)
  (tmp_path / "Scientific.item.json").write_text('{"0": {}, "2": {}}')
  with pytest.raises(ValueError, match="item keys must be 0..1"):
    load_dataset(tmp_path)


def test_missing_fields_become_empty(tmp_path):
  (tmp_path / "Scientific.item.json").write_text('{"0": {"title": "a"}}')
  (tmp_path / "Scientific.inter.json").write_text('{"0": [0, 0, 0]}')
  assert load_dataset(tmp_path).items[0] == ItemInfo("a", "", "", "")


def test_any_dataset_name_is_found_from_the_directory(tmp_path):
  # The amazon-scientific layout (no timestamps)...
  write_dataset(tmp_path / "sci", "Scientific", [[0, 1, 2], [3, 2, 1, 0]])
  sci = load_dataset(tmp_path / "sci")
  assert sci.name == "Scientific" and sci.timestamps is None
  assert [h.tolist() for h in sci.histories] == [[0, 1, 2], [3, 2, 1, 0]]
  assert item_file(tmp_path / "sci") == tmp_path / "sci" / "Scientific.item.json"
  # ... and the amazon-office one (timestamps parallel to the interactions).
  write_dataset(tmp_path / "office", "Office", [[1, 2, 3], [0, 3, 1]],
                 [[10, 10, 20], [5, 6, 7]])
  office = load_dataset(tmp_path / "office")
  assert office.name == "Office" and office.num_items == 4
  assert [t.tolist() for t in office.timestamps] == [[10, 10, 20], [5, 6, 7]]
  assert office.items[3] == ItemInfo("item 3", "", "", "")


def test_dataset_layout_errors_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="exactly one <Name>.inter.json"):
    dataset_name(tmp_path)
  write_dataset(tmp_path, "A", [[0, 1, 2]])
  write_dataset(tmp_path, "B", [[0, 1, 2]])
  with pytest.raises(ValueError, match=r"found 2 \(\['A', 'B'\]\)"):
    load_dataset(tmp_path)
  write_dataset(tmp_path / "t", "T", [[0, 1, 2]], [[1, 2]])
  with pytest.raises(ValueError, match="user 0 has 2 timestamps for 3 items"):
    load_dataset(tmp_path / "t")
  write_dataset(tmp_path / "d", "D", [[0, 1, 2]], [[3, 2, 1]])
  with pytest.raises(ValueError, match="non-decreasing"):
    load_dataset(tmp_path / "d")


def test_office_files_load():
  office = load_dataset("../shared/datasets/amazon-office")
  # Counts of the dataset's README.
  assert (office.name, office.num_users, office.num_items,
          office.num_interactions) == ("Office", 4905, 2420, 53258)
  assert all(len(t) == len(h) for t, h in zip(office.timestamps,
                                              office.histories))


def test_ragged_rows_are_views_of_one_array():
  rows = [[1, 2, 3], [4], [5, 6, 7, 8], []]
  ragged = Ragged.from_rows(rows)
  assert [r.tolist() for r in ragged] == rows
  assert [r.tolist() for r in ragged[1:3]] == rows[1:3]
  assert ragged[2].base is ragged.values  # a view, no copy
  picked = ragged.select(np.array([2, 0]))
  assert [b.tolist() for b in picked.blocks(1)] == [rows[2], rows[0]]
  assert [b.tolist() for b in picked.blocks()] == [rows[2] + rows[0]]
  assert ragged.select([0, 2]).shortened(1).last().tolist() == [2, 7]
  with pytest.raises(ValueError, match="row 3 has 0 values, fewer than"):
    ragged.shortened(1)
