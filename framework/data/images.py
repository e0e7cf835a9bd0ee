"""Image reading (JPEG/PNG through Pillow) and the reference code's transforms, without torchvision.

Training frames get ``RandomResizedCrop(size)`` (scale 0.08-1, aspect 3/4-4/3, as torchvision) and a
random horizontal flip; evaluation frames are resized to ``size x size``. Both end in
``ToTensor`` + ImageNet ``Normalize``. Randomness comes from torch's global generator, which the
DataLoader seeds per worker, so a seeded run is reproducible.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class ImageReadError(ValueError):
    """An image file could not be decoded; the message names the file."""


def list_images(folder: str | Path) -> list[str]:
    """Sorted file names of the images (jpg/jpeg/png) directly in ``folder``."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file())


def _rand() -> float:
    return float(torch.rand(()))


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params``: a box ``(left, top, right, bottom)``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * _rand())
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * _rand())
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, ()))
            left = int(torch.randint(0, width - w + 1, ()))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def to_tensor(img: Image.Image, normalize: bool = True) -> Tensor:
    """``(C, H, W)`` float32 in [0, 1], ImageNet-normalized for RGB when ``normalize``."""
    array = np.asarray(img, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    x = torch.from_numpy(array.transpose(2, 0, 1).copy())
    if normalize and x.shape[0] == 3:
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        x = (x - mean) / std
    return x


AUGMENTATIONS = ("none", "flip", "crop_flip")


def load_image(path: str | Path, size: int, augment: str = "none", normalize: bool = True) -> Tensor:
    """Read one image and transform it to ``(3, size, size)``.

    ``augment``: ``crop_flip`` (the reference's training transform: random resized crop, random
    horizontal flip), ``flip`` (resize, random horizontal flip) or ``none`` (resize: evaluation).
    """
    return transform_image(decode_image(path, size, augment), size, augment, normalize)


def decode_image(path: str | Path, size: int, augment: str = "none") -> Image.Image:
    """The RGB image :func:`load_image` transforms: at full resolution for ``crop_flip``, else
    decoded at a reduced scale where the JPEG is much larger than ``size`` (not yet resized)."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}; valid choices: {', '.join(AUGMENTATIONS)}")
    try:
        with Image.open(path) as raw:
            if augment != "crop_flip":
                raw.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when much larger
            raw.load()
            return raw.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot decode image ({exc})") from exc


def transform_image(img: Image.Image, size: int, augment: str = "none", normalize: bool = True) -> Tensor:
    """:func:`load_image` after decoding: random resized crop (``crop_flip``), resize to
    ``size x size`` (a copy when already that size), random flip (``flip``, ``crop_flip``),
    then to a tensor. Randomness from torch's global generator."""
    if augment == "crop_flip":
        img = img.crop(random_resized_crop_box(*img.size))  # resizing with box= would blend in pixels outside it
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    if augment != "none" and _rand() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(img, normalize)


def write_image(path: str | Path, array: np.ndarray) -> None:
    """Write a ``(H, W, 3)`` or ``(H, W)`` uint8 array as JPEG or PNG (by extension)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
