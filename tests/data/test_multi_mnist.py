"""Multi-task datasets (framework/data/multitask.py): Multi-MNIST, Multi-Fashion, Multi-(Fashion+MNIST),
and the Fashion-MNIST step of framework.data.prepare."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from framework.data import prepare
from framework.data.base import DatasetSpec, iterate_batches
from framework.data import multitask
from framework.data.multitask import MultitaskSpec, MultitaskTensorDataset, _split_parts, multitask_splits
from framework.data.sources import FASHION_APT, FASHION_FILE, MNIST_FILE, load_fashion_mnist

SMALL = {"train_size": 60, "val_size": 20, "test_size": 20}


def write_label_coded(data_dir: Path, n: int = 200, fashion: bool = False) -> None:
    """Items whose every pixel is ``10 * (label + 1)`` (fashion: ``+ 5``), so a canvas's corners say
    which labels were put there."""
    labels = np.arange(n, dtype=np.int64) % 10
    images = np.broadcast_to((10 * (labels + 1) + (5 if fashion else 0)).astype(np.uint8)[:, None, None], (n, 28, 28))
    path = data_dir / (FASHION_FILE if fashion else MNIST_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=np.ascontiguousarray(images), labels=labels)


@pytest.fixture
def digits(tmp_path: Path, writers) -> Path:
    writers.write_cached_digits(tmp_path)
    return tmp_path


def test_splits_have_one_image_modality_and_one_label_column_per_task(digits):
    splits = multitask_splits(digits, **SMALL)
    spec = splits.spec
    assert isinstance(spec, MultitaskSpec) and isinstance(spec, DatasetSpec)
    assert dict(spec.modalities) == {"image": (1, 28, 28)} and dict(spec.tasks) == {"left": 10, "right": 10}
    assert spec.num_classes == 10
    for name, n in (("train", 60), ("val", 20), ("test", 20)):
        split = getattr(splits, name)
        assert isinstance(split, MultitaskTensorDataset) and len(split) == n and split.spec == spec
        inputs, labels = split[0]
        assert inputs["image"].shape == (1, 28, 28) and labels.shape == (2,) and labels.dtype == torch.long
    inputs, labels = next(iterate_batches(splits.train, 8, shuffle=False))
    assert inputs["image"].shape == (8, 1, 28, 28) and labels.shape == (8, 2)
    assert abs(float(splits.train.inputs["image"].mean())) < 1e-4  # normalised with training statistics


def test_the_corners_hold_the_labelled_items(tmp_path):
    """Without shift, at 36x36: the top-left 8x8 corner shows only the left item, the bottom-right
    one only the right item, so the label columns are the items' labels."""
    write_label_coded(tmp_path)
    splits = multitask_splits(tmp_path, size=36, shift=0, normalize=False, **SMALL)
    for split in (splits.train, splits.val, splits.test):
        x, y = split.inputs["image"][:, 0], split.labels
        assert torch.allclose(x[:, 0, 0] * 255, (10 * (y[:, 0] + 1)).float(), atol=1e-3)
        assert torch.allclose(x[:, -1, -1] * 255, (10 * (y[:, 1] + 1)).float(), atol=1e-3)
        middle = x[:, 8:28, 8:28] * 255  # the overlap: max of the two
        assert torch.allclose(middle[:, 5, 5], (10 * (y.max(dim=1).values + 1)).float(), atol=1e-3)


def test_shift_moves_the_items_within_four_pixels(tmp_path):
    write_label_coded(tmp_path)
    x = multitask_splits(tmp_path, size=36, shift=4, normalize=False, **SMALL).train.inputs["image"][:, 0]
    # the left item always covers rows/cols 4..27, the right one 8..31; the outer 4-pixel frame varies
    assert (x[:, 4:28, 4:28] > 0).all() and (x[:, 8:32, 8:32] > 0).all()
    assert (x[:, 0, :] == 0).any() and (x[:, 0, :] > 0).any() and (x[:, -1, :] == 0).any()


def test_pairs_are_deterministic_and_the_seed_changes_them(digits):
    a, b = multitask_splits(digits, **SMALL), multitask_splits(digits, **SMALL)
    c = multitask_splits(digits, split_seed=1, **SMALL)
    assert torch.equal(a.train.inputs["image"], b.train.inputs["image"]) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.labels, c.train.labels)


def test_source_items_are_split_disjointly():
    parts = _split_parts(100, 0.2, 0.1, np.random.default_rng(0))
    assert [len(p) for p in parts] == [20, 10, 70]
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))


def test_third_task_same_is_whether_the_labels_agree(digits):
    splits = multitask_splits(digits, third_task="same", **SMALL)
    assert dict(splits.spec.tasks) == {"left": 10, "right": 10, "same": 2}
    y = splits.train.labels
    assert y.shape == (60, 3) and torch.equal(y[:, 2], (y[:, 0] == y[:, 1]).long())
    balanced = multitask_splits(digits, third_task="same", same_fraction=0.5, train_size=400, val_size=20, test_size=20)
    assert 0.35 < float(balanced.train.labels[:, 2].float().mean()) < 0.65


def _right_only(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0, 29:, 29:]  # only the right item reaches there (36x36, no shift), outside its centre half


def test_difficulty_knobs_degrade_the_right_item_only(tmp_path):
    write_label_coded(tmp_path)
    options = {"size": 36, "shift": 0, "normalize": False, **SMALL}
    clean = multitask_splits(tmp_path, **options).train.inputs["image"]
    for knob, value in (("right_noise", 0.3), ("right_occlusion", 0.5), ("right_scale", 0.5)):
        x = multitask_splits(tmp_path, **options, **{knob: value}).train.inputs["image"]
        assert torch.equal(x[:, 0, :8, :8], clean[:, 0, :8, :8]), knob  # the left-only corner is untouched
        assert not torch.equal(_right_only(x), _right_only(clean)), knob
    occluded = multitask_splits(tmp_path, **options, right_occlusion=0.5).train.inputs["image"]
    hidden = (_right_only(occluded) == 0).float().mean()  # the corner is 7x7 of the right box
    assert hidden > 0.05
    assert (_right_only(multitask_splits(tmp_path, **options, right_scale=0.5).train.inputs["image"]) == 0).all()


def test_fashion_sources_mix_with_mnist(tmp_path):
    write_label_coded(tmp_path)
    write_label_coded(tmp_path, fashion=True)
    splits = multitask_splits(tmp_path, left="mnist", right="fashion", size=36, shift=0, normalize=False, **SMALL)
    x, y = splits.train.inputs["image"][:, 0], splits.train.labels
    assert torch.allclose(x[:, 0, 0] * 255, (10 * (y[:, 0] + 1)).float(), atol=1e-3)  # an MNIST digit
    assert torch.allclose(x[:, -1, -1] * 255, (10 * (y[:, 1] + 1) + 5).float(), atol=1e-3)  # a Fashion item
    both = multitask_splits(tmp_path, left="fashion", right="fashion", **SMALL)
    assert dict(both.spec.tasks) == {"left": 10, "right": 10}


def test_named_datasets_fix_their_sources_and_take_every_other_option(tmp_path):
    write_label_coded(tmp_path)
    write_label_coded(tmp_path, fashion=True)
    options = {"size": 36, "shift": 0, "normalize": False, **SMALL}
    for name, (left, right) in {"multi_mnist": (0, 0), "multi_fashion": (5, 5), "multi_fashion_mnist": (0, 5)}.items():
        build = getattr(multitask, f"{name}_splits")
        assert build.__name__ == f"{name}_splits" and "left" not in __import__("inspect").signature(build).parameters
        splits = build(tmp_path, third_task="same", **options)
        x, y = splits.train.inputs["image"][:, 0], splits.train.labels
        assert torch.allclose(x[:, 0, 0] * 255, (10 * (y[:, 0] + 1) + left).float(), atol=1e-3), name
        assert torch.allclose(x[:, -1, -1] * 255, (10 * (y[:, 1] + 1) + right).float(), atol=1e-3), name
        assert list(splits.spec.tasks) == ["left", "right", "same"]


def test_missing_fashion_is_one_line_naming_the_apt_command(digits):
    with pytest.raises(FileNotFoundError) as raised:
        multitask_splits(digits, right="fashion", **SMALL)
    message = str(raised.value)
    assert "\n" not in message and FASHION_APT in message and "framework.data.prepare" in message


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"left": "cifar"}, "left source"),
        ({"third_task": "sum"}, "third_task"),
        ({"right_noise": -0.1}, "right_noise"),
        ({"right_occlusion": 1.0}, "right_occlusion"),
        ({"left_scale": 0.0}, "left_scale"),
        ({"shift": 5}, "shift"),
        ({"same_fraction": 1.5}, "same_fraction"),
    ],
)
def test_bad_options_are_one_line_errors_naming_them(digits, options, names):
    with pytest.raises(ValueError, match=names):
        multitask_splits(digits, **{**SMALL, **options})


def test_spec_needs_two_tasks_of_two_classes_each():
    with pytest.raises(ValueError, match="at least 2 tasks"):
        MultitaskSpec.of({"image": (1, 28, 28)}, {"left": 10})
    with pytest.raises(ValueError, match="at least 2 classes"):
        MultitaskSpec.of({"image": (1, 28, 28)}, {"left": 10, "same": 1})
    assert DatasetSpec({"a": (3,)}, 4).num_classes == 4  # the multimodal spec is unchanged


def test_dataset_refuses_labels_that_do_not_fit_the_tasks():
    spec = MultitaskSpec.of({"image": (1, 4, 4)}, {"left": 10, "same": 2})
    x = {"image": torch.zeros(3, 1, 4, 4)}
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        MultitaskTensorDataset(x, torch.zeros(3, dtype=torch.long), spec)
    with pytest.raises(ValueError, match="out of range"):
        MultitaskTensorDataset(x, torch.tensor([[0, 0], [1, 2], [9, 1]]), spec)


# ---------------------------------------------------------------- prepare: Fashion-MNIST from Debian's package


def test_prepare_caches_fashion_from_the_debian_layout(tmp_path, writers, monkeypatch):
    source = tmp_path / "usr-share-datasets-fashion-mnist"
    writers.write_fashion_debian(source, n_train=60, n_test=10)
    monkeypatch.setattr(prepare.fashion_mnist, "FASHION_TOTAL", 70)
    monkeypatch.setattr(prepare.fashion_mnist, "FASHION_PER_CLASS", 7)
    monkeypatch.setenv(prepare.FASHION_DIR_ENV, str(source))
    data = tmp_path / "data"
    assert prepare.prepare_fashion_mnist(data) == "debian"
    images, labels = load_fashion_mnist(data)
    assert images.shape == (70, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.concatenate([np.arange(60) % 10, np.arange(10) % 10]))
    with np.load(data / FASHION_FILE) as npz:
        assert npz["official_test"].sum() == 10 and npz["official_test"][-10:].all()
    assert "dataset-fashion-mnist" in (data / FASHION_FILE).parent.joinpath("SOURCE.txt").read_text()
    assert prepare.prepare_fashion_mnist(data) == "cached"


def test_prepare_skips_fashion_when_the_package_is_absent(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(prepare.FASHION_DIR_ENV, str(tmp_path / "nowhere"))
    assert prepare.prepare_fashion_mnist(tmp_path / "data") == "skipped"
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().out
    assert not (tmp_path / "data" / FASHION_FILE).exists()


def test_prepare_refuses_a_fashion_file_that_is_not_idx(tmp_path, writers, monkeypatch):
    source = tmp_path / "fashion"
    writers.write_fashion_debian(source)
    (source / "train-labels-idx1-ubyte.gz").write_bytes(__import__("gzip").compress(b"\x00\x00\x09\x01rubbish"))
    monkeypatch.setenv(prepare.FASHION_DIR_ENV, str(source))
    with pytest.raises(prepare.PrepareError, match="not a uint8 IDX file"):
        prepare.prepare_fashion_mnist(tmp_path / "data")
