"""ModelNet40 as two views of the MVCNN 12-view renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.data.base import CorruptSampleError, iterate_batches
from framework.data.images import IMAGENET_MEAN, IMAGENET_STD, write_image
from framework.data.modelnet40_views import CLASSES, modelnet40_views_splits


def write_coded(root, cls, split, number, naming="{cls}_{k:04d}.obj.shaded_v{view:03d}.png"):
    """An object whose view v (1-based in the file name) is a flat image of gray level 20 * v."""
    for view in range(1, 13):
        name = naming.format(cls=cls, k=number, view=view)
        write_image(root / cls / split / name, np.full((8, 8, 3), 20 * view, dtype=np.uint8))


def level(x: torch.Tensor) -> int:
    """The gray level / 20 of a flat image, undoing the ImageNet normalisation."""
    std, mean = torch.tensor(IMAGENET_STD).view(3, 1, 1), torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    return round(float((x * std + mean).mean()) * 255 / 20)


@pytest.fixture
def root(tmp_path, writers):
    writers.write_modelnet40_views(tmp_path, {"train": {"airplane": 4, "xbox": 4}, "test": {"airplane": 1, "xbox": 2}}, size=12)
    return tmp_path


def test_layout_loads_forty_classes_and_two_view_modalities(root):
    splits = modelnet40_views_splits(root, image_size=16)
    assert dict(splits.spec.modalities) == {"front": (3, 16, 16), "rear": (3, 16, 16)}
    assert splits.spec.num_classes == 40 == len(CLASSES)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 3)
    assert sorted(o.label for o in splits.val.objects) == [CLASSES.index("airplane"), CLASSES.index("xbox")]
    inputs, label = splits.test[2]
    assert label == CLASSES.index("xbox") and inputs["front"].shape == (3, 16, 16)


@pytest.mark.parametrize("naming", ["{cls}_{k:04d}.obj.shaded_v{view:03d}.png", "{cls}_{k:04d}_{view:03d}.png"])
def test_views_pick_the_right_files(tmp_path, naming):
    write_coded(tmp_path, "chair", "train", 1, naming)
    write_coded(tmp_path, "chair", "test", 2, naming)
    plain = {"image_size": 8, "augment": "none", "val_fraction": 0.0}
    splits = modelnet40_views_splits(tmp_path, **plain)
    inputs, _ = splits.test[0]
    # views 0 and 6 (0-based) are the files numbered 1 and 7 (gray levels 20 and 140)
    assert level(inputs["front"]) == 1 and level(inputs["rear"]) == 7
    other = modelnet40_views_splits(tmp_path, views={"a": 3, "b": 11, "c": 0}, **plain)
    assert list(other.spec.modalities) == ["a", "b", "c"]
    x, _ = other.test[0]
    assert [level(x[m]) for m in ("a", "b", "c")] == [4, 12, 1]


def test_training_flips_evaluation_does_not(root):
    splits = modelnet40_views_splits(root, image_size=12)
    torch.testing.assert_close(splits.test[0][0]["front"], splits.test[0][0]["front"])
    torch.manual_seed(0)
    draws = [splits.train[0][0]["front"] for _ in range(10)]
    assert any(not torch.equal(draws[0], d) for d in draws)


def test_objects_with_missing_views_are_skipped_or_an_error(root):
    victim = sorted((root / "xbox" / "test").iterdir())[0]
    victim.unlink()
    splits = modelnet40_views_splits(root, image_size=8)
    assert len(splits.test) == 2 and splits.test.skipped == 1
    assert splits.test.skipped_ids == ["xbox/test/xbox_0001.obj.shaded_v"]
    with pytest.raises(CorruptSampleError, match="'xbox/test/xbox_0001.obj.shaded_v': 11 views, expected 12"):
        modelnet40_views_splits(root, on_corrupt="error")


def test_undecodable_view_is_reported_by_object(root):
    (root / "airplane" / "test" / "airplane_0001.obj.shaded_v007.png").write_bytes(b"oops")
    splits = modelnet40_views_splits(root, image_size=8, on_corrupt="error")
    with pytest.raises(CorruptSampleError, match=r"corrupt sample 'airplane/test/airplane_0001\.obj\.shaded_v'"):
        splits.test[0]
    skipping = modelnet40_views_splits(root, image_size=8)
    assert sum(b[1].shape[0] for b in iterate_batches(skipping.test, 2, False, num_workers=2)) == 3
    assert skipping.test.skipped == 1


def test_layout_errors(tmp_path, root):
    with pytest.raises(FileNotFoundError, match="nowhere not found; expected layout: .*<class>/<train|test>"):
        modelnet40_views_splits(tmp_path / "nowhere")
    (root / "spaceship").mkdir()
    with pytest.raises(ValueError, match=r"not ModelNet40 classes: \['spaceship'\]"):
        modelnet40_views_splits(root)
    (root / "spaceship").rmdir()
    with pytest.raises(ValueError, match=r"view indices in \[0, 12\)"):
        modelnet40_views_splits(root, views={"front": 12})
    empty = tmp_path / "empty"
    (empty / "chair" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no train objects"):
        modelnet40_views_splits(empty)
