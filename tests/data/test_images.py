"""Image reading through Pillow and the reference transforms, without torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageReadError,
    list_images,
    load_image,
    random_resized_crop_box,
    write_image,
)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_load_image_resizes_and_normalizes(tmp_path, ext):
    path = tmp_path / f"flat.{ext}"
    write_image(path, np.full((20, 30, 3), 128, dtype=np.uint8))
    x = load_image(path, 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x.mean(dim=(1, 2)), expected, atol=0.02, rtol=0)


def test_gray_png_becomes_three_channels(tmp_path):
    write_image(tmp_path / "g.png", np.full((8, 8), 255, dtype=np.uint8))
    x = load_image(tmp_path / "g.png", 8, normalize=False)
    torch.testing.assert_close(x, torch.ones(3, 8, 8))


def test_eval_is_deterministic_and_training_augments(tmp_path):
    rng = np.random.default_rng(0)
    write_image(tmp_path / "r.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    a = load_image(tmp_path / "r.png", 24, "none")
    torch.testing.assert_close(a, load_image(tmp_path / "r.png", 24, "none"))
    torch.manual_seed(0)
    crops = [load_image(tmp_path / "r.png", 24, "crop_flip") for _ in range(4)]
    assert all(c.shape == (3, 24, 24) for c in crops)
    assert not all(torch.equal(crops[0], c) for c in crops[1:])
    torch.manual_seed(0)
    torch.testing.assert_close(crops[0], load_image(tmp_path / "r.png", 24, "crop_flip"))


def test_flip_only_mirrors(tmp_path):
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[:, :4] = 255
    write_image(tmp_path / "half.png", pixels)
    seen = set()
    torch.manual_seed(0)
    for _ in range(12):
        x = load_image(tmp_path / "half.png", 8, "flip", normalize=False)
        seen.add(bool(x[0, 0, 0] > 0.5))
    assert seen == {True, False}


def test_random_resized_crop_box_stays_inside():
    torch.manual_seed(0)
    for width, height in [(100, 60), (7, 300), (300, 7), (1, 1)]:
        for _ in range(20):
            left, top, right, bottom = random_resized_crop_box(width, height)
            assert 0 <= left < right <= width and 0 <= top < bottom <= height


def test_unknown_augment_is_rejected(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="valid choices: none, flip, crop_flip"):
        load_image(tmp_path / "a.png", 4, "rotate")


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    write_image(tmp_path / "ok.jpg", np.zeros((32, 32, 3), dtype=np.uint8))
    (tmp_path / "trunc.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:100])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("trunc.jpg", "text.png"):
        for augment in ("none", "crop_flip"):
            with pytest.raises(ImageReadError, match=name):
                load_image(tmp_path / name, 8, augment)


def test_list_images_sorts_and_filters(tmp_path):
    for name in ("frame_00002.jpg", "frame_00001.jpg", "notes.txt", "x.PNG"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()
    assert list_images(tmp_path) == ["frame_00001.jpg", "frame_00002.jpg", "x.PNG"]
