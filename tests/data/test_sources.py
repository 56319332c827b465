"""Search order data-dir > cache > system, verification in each place, and the split."""

import dataclasses
import gzip
import shutil

import numpy as np
import pytest

from bnlab.data.datasets import get_spec, load_dataset
from bnlab.data.sources import check_files, read_files
from bnlab.data.spec import ROLES
from bnlab.errors import DataError
from tests.data.tinydata import NAMES, make_tiny, other_gz


def locate(tiny, tmp_path, **kwargs):
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    kwargs.setdefault("download", False)
    return [record for record, _ in read_files(tiny.spec, **kwargs).values()]


def test_data_dir_wins_over_cache_and_system(tiny, tmp_path):
    data_dir = tiny.put(tmp_path / "mine")
    tiny.put(tmp_path / "cache" / "tiny")
    system = tiny.put(tmp_path / "system")
    records = locate(tiny, tmp_path, data_dir=data_dir, system_dirs=[system])
    assert [r.origin for r in records] == ["data-dir"] * 4
    assert [r.path for r in records] == [data_dir / NAMES[role] for role in ROLES]


def test_cache_wins_over_system(tiny, tmp_path):
    cache = tiny.put(tmp_path / "cache" / "tiny")
    system = tiny.put(tmp_path / "system")
    records = locate(tiny, tmp_path, system_dirs=[system])
    assert [(r.origin, r.path.parent) for r in records] == [("cache", cache)] * 4


def test_first_system_dir_holding_the_file_is_used(tiny, tmp_path):
    first = tiny.put(tmp_path / "first", skip=(NAMES["test_images"],))
    second = tiny.put(tmp_path / "second")
    records = locate(tiny, tmp_path, system_dirs=[tmp_path / "absent", first, second])
    assert [r.origin for r in records] == ["system"] * 4
    assert [r.path.parent for r in records] == [first, first, second, first]


def test_each_file_is_looked_up_on_its_own(tiny, tmp_path):
    tiny.put(tmp_path / "cache" / "tiny", skip=(NAMES["test_images"], NAMES["test_labels"]))
    system = tiny.put(tmp_path / "system")
    records = locate(tiny, tmp_path, system_dirs=[system])
    assert [r.origin for r in records] == ["cache", "cache", "system", "system"]


def test_records_carry_role_and_the_verified_decompressed_digest(tiny, tmp_path):
    records = locate(tiny, tmp_path, system_dirs=[tiny.put(tmp_path / "system")])
    assert [r.role for r in records] == list(ROLES)
    assert [r.sha256 for r in records] == [f.sha256 for f in tiny.spec.files().values()]


def test_data_dir_missing_a_file_is_an_error_not_a_fallback(tiny, tmp_path):
    data_dir = tiny.put(tmp_path / "mine", skip=(NAMES["train_labels"],))
    tiny.put(tmp_path / "cache" / "tiny")
    system = tiny.put(tmp_path / "system")
    with pytest.raises(DataError) as err:
        locate(tiny, tmp_path, data_dir=data_dir, system_dirs=[system])
    assert str(err.value) == (
        f"tiny-train-labels.gz is missing from the data directory {data_dir}; "
        f"put the original tiny-train-labels.gz in {data_dir}, or leave out data_dir"
    )


def test_a_data_dir_that_does_not_exist_is_named_as_such(tiny, tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DataError, match=r"^the data directory .*no-such-folder does not exist;"):
        locate(tiny, tmp_path, data_dir=missing)


@pytest.mark.parametrize(
    ("origin", "fix"),
    [
        ("data-dir", "or leave out data_dir"),
        ("system", "reinstall it: sudo apt-get install --reinstall dataset-tiny"),
    ],
)
@pytest.mark.parametrize("damage", ["wrong-digest", "truncated-gzip"])
def test_a_bad_file_is_an_error_naming_path_and_fix_even_if_a_later_place_is_good(
    tiny, tmp_path, origin, fix, damage
):
    places = {"data-dir": tmp_path / "mine", "cache": tmp_path / "cache" / "tiny",
              "system": tmp_path / "system", "later": tmp_path / "later"}
    for directory in places.values():  # good copies in the places searched later
        tiny.put(directory)
    if origin == "system":
        shutil.rmtree(places["cache"])
    path = places[origin] / NAMES["test_images"]
    good = path.read_bytes()
    path.write_bytes(other_gz() if damage == "wrong-digest" else good[: len(good) // 2])
    data_dir = places["data-dir"] if origin == "data-dir" else None
    with pytest.raises(DataError) as err:
        locate(tiny, tmp_path, data_dir=data_dir,
               system_dirs=[places["system"], places["later"]])
    message = str(err.value)
    problem = "has the wrong content" if damage == "wrong-digest" else "is truncated"
    assert message.startswith(f"{path} {problem}")
    assert message.endswith(fix.format(path=path)) and "\n" not in message


def damage(path, how: str) -> None:
    """Make the file at ``path`` unusable: another valid file, or half of its gzip."""
    good = path.read_bytes()
    path.write_bytes(other_gz() if how == "wrong-digest" else good[: len(good) // 2])


@pytest.mark.parametrize(("how", "problem"), [("wrong-digest", "has the wrong content"),
                                               ("truncated-gzip", "is truncated")])
def test_a_corrupt_cached_copy_gives_way_to_a_verified_system_copy_with_a_note(
        tiny, tmp_path, how, problem):
    cache = tiny.put(tmp_path / "cache" / "tiny")
    system = tiny.put(tmp_path / "system")
    bad = cache / NAMES["test_images"]
    damage(bad, how)
    before = bad.read_bytes()
    splits = load_dataset("tiny", cache_dir=tmp_path / "cache", system_dirs=[system],
                          download=False, registry={"tiny": tiny.spec})
    np.testing.assert_array_equal(splits.x_test, tiny.arrays["test_images"])
    records = {record.role: record for record in splits.sources}
    used = records["test_images"]
    assert (used.origin, used.path) == ("system", system / NAMES["test_images"])
    (note,) = used.notes
    assert note.startswith(f"{bad} {problem}")
    assert note.endswith(f"; skipped it and used the verified {used.path} instead "
                         f"(rm {bad} to clear this warning)")
    assert "run again" not in note and "\n" not in note  # the error's fix is not the note's
    assert all(records[role].notes == () and records[role].origin == "cache"
               for role in ROLES if role != "test_images")
    assert bad.read_bytes() == before  # the system copy is read, nothing is written


def test_a_corrupt_cached_copy_is_noted_by_check_files_too(tiny, tmp_path):
    cache = tiny.put(tmp_path / "cache" / "tiny")
    damage(cache / NAMES["train_labels"], "wrong-digest")
    spec = dataclasses.replace(tiny.spec, system_dirs=(tiny.put(tmp_path / "system"),))
    results = check_files(spec, cache_dir=tmp_path / "cache", download=False)
    assert results["train_labels"].origin == "system"
    assert "has the wrong content" in results["train_labels"].notes[0]


@pytest.mark.parametrize("later", ["nothing", "a bad system copy"])
def test_a_corrupt_cached_copy_with_no_verified_copy_further_on_is_the_error(
        tiny, tmp_path, later):
    cache = tiny.put(tmp_path / "cache" / "tiny")
    bad = cache / NAMES["test_images"]
    damage(bad, "truncated-gzip")
    system = tmp_path / "system"
    if later == "a bad system copy":
        damage(tiny.put(system) / NAMES["test_images"], "wrong-digest")
    with pytest.raises(DataError) as err:
        locate(tiny, tmp_path, system_dirs=[system])
    assert str(err.value) == (f"{bad} is truncated: the gzip stream ends early; delete it "
                              f"(rm {bad}) and run again to fetch a fresh copy")


def test_wrong_digest_message_states_sizes_and_digests(tiny, tmp_path):
    cache = tiny.put(tmp_path / "cache" / "tiny")
    (cache / NAMES["train_labels"]).write_bytes(other_gz())
    expected = tiny.spec.train_labels
    with pytest.raises(DataError, match=rf"expected: {expected.size} bytes, sha256 "
                       rf"{expected.sha256[:12]}…"):
        locate(tiny, tmp_path)


def test_missing_everywhere_without_download_says_how_to_get_the_files(tiny, tmp_path):
    with pytest.raises(DataError) as err:
        locate(tiny, tmp_path, system_dirs=[tmp_path / "system"])
    assert str(err.value) == (
        f"tiny-train-images.gz is not in {tmp_path / 'cache' / 'tiny'}, {tmp_path / 'system'} "
        "and downloading is off; sudo apt-get install dataset-tiny, or pass data_dir=DIR "
        "holding the 4 .gz files of tiny"
    )


def test_missing_everywhere_with_no_mirror_is_an_error(tiny, tmp_path):
    with pytest.raises(DataError, match="there is no mirror to download it from"):
        locate(tiny, tmp_path, download=True, mirrors=[])


def test_load_dataset_splits_validation_first_then_train_as_the_notebook(tiny, tmp_path):
    splits = load_dataset(
        "tiny", cache_dir=tmp_path / "cache", system_dirs=[tiny.put(tmp_path / "system")],
        download=False, registry={"tiny": tiny.spec},
    )
    images, labels = tiny.arrays["train_images"], tiny.arrays["train_labels"]
    np.testing.assert_array_equal(splits.x_val, images[:3])
    np.testing.assert_array_equal(splits.x_train, images[3:])
    np.testing.assert_array_equal(splits.y_val, labels[:3])
    np.testing.assert_array_equal(splits.y_train, labels[3:])
    np.testing.assert_array_equal(splits.x_test, tiny.arrays["test_images"])
    np.testing.assert_array_equal(splits.y_test, tiny.arrays["test_labels"])
    assert splits.x_train.dtype == np.uint8 and splits.y_train.dtype == np.int32
    assert splits.class_names == ("a", "b", "c")
    assert [s.origin for s in splits.sources] == ["system"] * 4
    arrays = [splits.x_train, splits.y_train, splits.x_val, splits.y_val, splits.x_test,
              splits.y_test]
    assert not any(a.flags.writeable for a in arrays)


def test_subset_keeps_the_first_rows_of_each_split_and_bounds_them(tiny, tmp_path):
    from bnlab.errors import ConfigError

    splits = load_dataset("tiny", cache_dir=tmp_path, system_dirs=[tiny.put(tmp_path / "s")],
                          download=False, registry={"tiny": tiny.spec})
    small = splits.subset(train=2, test=3)
    np.testing.assert_array_equal(small.x_train, splits.x_train[:2])
    np.testing.assert_array_equal(small.y_test, splits.y_test[:3])
    assert small.x_val is splits.x_val and small.class_names == splits.class_names
    assert repr(small) == "Splits(train=2, val=3, test=3, images (3, 2) uint8, 3 classes)"
    with pytest.raises(ConfigError, match=r"subset: train must be in 1\.\.5 rows, got 6"):
        splits.subset(train=6)


def test_label_outside_the_classes_is_an_error(tmp_path):
    bad = make_tiny(arrays={"test_labels": np.array([0, 1, 3, 2], np.uint8)})
    with pytest.raises(DataError, match=r"tiny-test-labels.gz holds label 3, outside 0..2"):
        load_dataset("tiny", cache_dir=tmp_path, system_dirs=[bad.put(tmp_path / "s")],
                     download=False, registry={"tiny": bad.spec})


def test_image_and_label_counts_must_match_the_registry(tmp_path):
    bad = make_tiny(arrays={"train_labels": np.zeros(7, np.uint8)}, shapes={"train_labels": (8,)})
    with pytest.raises(DataError, match=r"shape \(7,\), expected uint8 \(8,\)"):
        load_dataset("tiny", cache_dir=tmp_path, system_dirs=[bad.put(tmp_path / "s")],
                     download=False, registry={"tiny": bad.spec})


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match=r"unknown dataset 'mnist'; choose one of: fashion_mnist"):
        get_spec("mnist")


def test_cached_file_that_is_not_gzip_is_corrupt(tiny, tmp_path):
    cache = tiny.put(tmp_path / "cache" / "tiny")
    (cache / NAMES["train_images"]).write_bytes(gzip.decompress(tiny.gz[NAMES["train_images"]]))
    with pytest.raises(DataError, match="is corrupt: not a valid gzip stream"):
        locate(tiny, tmp_path)


def test_registry_entry_must_be_self_consistent(tiny):
    with pytest.raises(ValueError, match="image and label counts differ"):
        dataclasses.replace(tiny.spec, test_labels=tiny.spec.train_labels)
    with pytest.raises(ValueError, match=r"validation_size must be in 1..7"):
        dataclasses.replace(tiny.spec, validation_size=8)


def test_an_unchanged_file_is_verified_once_per_process_and_a_changed_one_again(tiny,
                                                                               tmp_path):
    """A second read of the same verified file reuses its decompressed bytes; the file
    rewritten in place with its size and modification time restored (only its change time
    moves) is read and verified again, and its damage found."""
    import os

    system = tiny.put(tmp_path / "system")
    first = read_files(tiny.spec, cache_dir=tmp_path / "cache", system_dirs=[system],
                       download=False)
    again = read_files(tiny.spec, cache_dir=tmp_path / "cache", system_dirs=[system],
                       download=False)
    assert all(again[role][1] is first[role][1] for role in ROLES)
    assert [r for r, _ in again.values()] == [r for r, _ in first.values()]
    path = system / NAMES["train_images"]
    before, data = path.stat(), bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(DataError, match=str(path)):
        read_files(tiny.spec, cache_dir=tmp_path / "cache", system_dirs=[system],
                   download=False)
