"""The CREMA-D pipeline against the official MMPareto dataset, sample by sample, on a fixture tree.

Reference: GeWu-Lab/MMPareto_ICML2024@a339db39cc25b157df376b50bb894917dc6c01d6,
``code/dataset/av_dataset.py`` (``AVDataset_CD``), built by ``code/MMPareto.py:285-293``
(``AVDataset_CD(mode='train')`` / ``mode='test'``, ``DataLoader(shuffle=True/False)``); the
scripts ``code/script/*.sh`` pass only ``--dataset CREMAD --n_classes 6``, so nothing else is
configurable: 2 frames of 224 x 224, the ``.pt`` spectrograms as stored.

:class:`Official` transcribes ``AVDataset_CD`` (no ``framework`` import); its torchvision
transforms are transcribed with PIL as torchvision applies them to PIL images (OGM-GE's README,
which MMPareto's data preparation follows, pins torchvision 0.9.1; the PIL path of these five
transforms is unchanged up to 0.28): ``RandomResizedCrop.get_params`` draws in float32 torch ops,
then ``img.crop(box).resize(size, BILINEAR)``; ``RandomHorizontalFlip`` is ``torch.rand(1) < 0.5``;
``Resize((224, 224))`` is ``img.resize(size, BILINEAR)``; ``ToTensor`` divides the uint8 pixels
by 255 in float32; ``Normalize`` subtracts the ImageNet mean and divides by its std in float32.

Frames are named ``frame_00001.jpg``, ``frame_00002.jpg``, ... (1-based: training draws file
numbers ``randint(i*seg + 1, i*seg + seg)``, the whole segment). Both sides read the same tree
(``tests/fixtures/writers.py``, the ``preprocessed`` layout is the official one), so every tensor
is compared exactly; the official draws frames with Python's ``random`` and the framework with
torch, so the training comparison replays the framework's draws in the transcription and checks
the distribution of the official draws separately.
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from framework.data import cremad
from framework.data.images import load_image, random_resized_crop_box

SIZE = 224  # av_dataset.py:78,85
PICK_NUM = 2  # av_dataset.py:92
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # av_dataset.py:81,87
FRAME_COUNTS = (4, 5, 6, 7, 9, 10)  # segments of 2, 2, 3, 3, 4, 5 frames
FRAME_SIZE = (360, 480)  # CREMA-D's videos are 480 x 360
SEEDS = (0, 1, 2)


# ---------------------------------------------------------------- the official dataset, transcribed


def _to_tensor_normalized(img: Image.Image) -> Tensor:
    """``ToTensor`` then ``Normalize(MEAN, STD)`` (torchvision, PIL input)."""
    x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    x = x.to(torch.float32).div(255)
    mean = torch.as_tensor(MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(STD, dtype=torch.float32).view(-1, 1, 1)
    return x.sub(mean).div(std)


def crop_params(width: int, height: int) -> tuple[int, int, int, int]:
    """``RandomResizedCrop.get_params(img, scale=(0.08, 1.0), ratio=(3/4, 4/3))``: ``(top, left, h, w)``."""
    scale, ratio = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,)).item())
            left = int(torch.randint(0, width - w + 1, size=(1,)).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_transform(img: Image.Image) -> Tensor:
    """av_dataset.py:77-82: RandomResizedCrop(224), RandomHorizontalFlip(), ToTensor, Normalize."""
    top, left, h, w = crop_params(*img.size)
    img = img.crop((left, top, left + w, top + h)).resize((SIZE, SIZE), Image.BILINEAR)
    if torch.rand(1) < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return _to_tensor_normalized(img)


def eval_transform(img: Image.Image) -> Tensor:
    """av_dataset.py:84-88: Resize((224, 224)), ToTensor, Normalize."""
    return _to_tensor_normalized(img.resize((SIZE, SIZE), Image.BILINEAR))


class Official:
    """``AVDataset_CD`` (av_dataset.py:18-107) on a root holding ``stat.csv``, ``{train,test}.csv``,
    ``audio/<clip>.pt`` and ``visual/<clip>/frame_000NN.jpg`` (the paths of l.25-29)."""

    def __init__(self, root: Path, mode: str, classes: list[str] | None = None) -> None:
        self.mode = mode
        self.visual_path, self.audio_path = f"{root}/visual/", f"{root}/audio/"
        with open(root / "stat.csv", encoding="UTF-8-sig") as f:  # l.36-39
            stat = [row[0] for row in csv.reader(f)]
        self.data: list[str] = []
        self.data2class: dict[str, str] = {}
        with open(root / ("train.csv" if mode == "train" else "test.csv")) as f:  # l.30-33, 41-47
            for item in csv.reader(f):
                if (
                    item[1] in stat
                    and os.path.exists(self.audio_path + item[0] + ".pt")
                    and os.path.exists(self.visual_path + "/" + item[0])
                ):
                    self.data.append(item[0])
                    self.data2class[item[0]] = item[1]
        self.classes = sorted(stat) if classes is None else classes  # l.52; ``classes``: a control

    def frame_numbers(self, datum: str, randint: Callable[[int, int], int]) -> list[int]:
        """l.90-100: the frame file numbers (1-based) picked for ``datum``."""
        file_num = len(os.listdir(self.visual_path + datum))
        seg = int(file_num / PICK_NUM)
        if self.mode == "train":
            return [randint(i * seg + 1, i * seg + seg) for i in range(PICK_NUM)]
        return [i * seg + int(seg / 2) for i in range(PICK_NUM)]

    def getitem(self, idx: int, randint: Callable[[int, int], int] = random.randint) -> tuple[Tensor, Tensor, int]:
        """l.69-107: ``(fbank (1, F, T), images (2, 3, 224, 224), label)``."""
        datum = self.data[idx]
        fbank = torch.load(self.audio_path + datum + ".pt").unsqueeze(0)  # l.73
        transform = train_transform if self.mode == "train" else eval_transform
        folder_path = self.visual_path + datum
        images = []
        for index in self.frame_numbers(datum, randint):
            path = folder_path + "/frame_000" + str(index).zfill(2) + ".jpg"  # l.101
            images.append(transform(Image.open(path).convert("RGB")).unsqueeze(0))  # l.103
        return fbank, torch.cat(images), self.classes.index(self.data2class[datum])  # l.105-107


class Replay:
    """Stands in for ``random.randint`` in the official frame pick: returns the framework's draws
    (offsets within each segment, drawn from torch as ``frame_indices`` does), in order."""

    def __init__(self, offsets: list[int], seg: int) -> None:
        self.offsets, self.seg = list(offsets), seg

    def __call__(self, low: int, high: int) -> int:
        assert high - low + 1 == self.seg
        return low + self.offsets.pop(0)


# ---------------------------------------------------------------- the fixture


@pytest.fixture(scope="module")
def root(tmp_path_factory, writers) -> Path:
    """12 clips (each emotion once per split), ``FRAME_COUNTS`` frames each, 480 x 360 JPEGs,
    ``(257, 188)`` spectrograms (float32, one float64), ``stat.csv`` in OGM-GE's (unsorted) order."""
    path = tmp_path_factory.mktemp("cremad")
    clips = {
        "train": [f"10{i:02d}_DFA_{c}_XX@{c}" for i, c in enumerate(cremad.CLASSES)],
        "test": [f"20{i:02d}_IEO_{c}_HI@{c}" for i, c in enumerate(cremad.CLASSES)],
    }
    layout = cremad.LAYOUTS["preprocessed"]
    writers.write_av_manifest(
        path, clips, layout, classes=cremad.CLASSES, frames_per_clip=max(FRAME_COUNTS), frame_size=FRAME_SIZE
    )
    for entries in clips.values():
        for k, entry in enumerate(entries):
            folder = path / layout.visual_dir / entry.rpartition("@")[0]
            for extra in sorted(folder.iterdir())[FRAME_COUNTS[k % len(FRAME_COUNTS)] :]:
                extra.unlink()
    first = path / layout.audio_dir / f"{clips['train'][1].rpartition('@')[0]}.pt"
    torch.save(torch.load(first).double(), first)
    return path


def framework_splits(root: Path):
    return cremad.cremad_splits(root, layout="preprocessed", val_fraction=0.0)


def seg_of(official: Official, datum: str) -> int:
    return len(os.listdir(official.visual_path + datum)) // PICK_NUM


# ---------------------------------------------------------------- the comparisons


def test_the_fixture_covers_odd_and_even_segments(root):
    official = Official(root, "test")
    assert sorted({seg_of(official, d) for d in official.data}) == [2, 3, 4, 5]


def test_same_clips_labels_and_spectrograms(root):
    splits = framework_splits(root)
    assert splits.spec.modalities["audio"] == (1, 257, 188)
    stored_float64 = 0
    for mode, dataset in (("train", splits.train), ("test", splits.test)):
        official = Official(root, mode)
        assert official.classes == ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
        assert [c.clip_id for c in dataset.clips] == official.data
        for k in range(len(official.data)):
            fbank, _, label = official.getitem(k, randint=lambda a, b: a)
            inputs, fw_label = dataset[k]
            assert fw_label == label
            assert inputs["audio"].dtype == torch.float32
            assert torch.equal(inputs["audio"], fbank.float())  # the model gets spec.float() (MMPareto.py:96)
            if fbank.dtype == torch.float64:
                stored_float64 += 1
    assert stored_float64 == 1


def test_class_order_control_differs(root):
    """OGM-GE's order (stat.csv unsorted) gives other labels: the label check can fail."""
    splits = framework_splits(root)
    unsorted = Official(root, "test", classes=list(cremad.CLASSES))
    labels = [unsorted.getitem(k)[2] for k in range(len(unsorted.data))]
    assert labels != [c.label for c in splits.test.clips]


def test_evaluation_frames_and_tensors_match_exactly(root):
    splits = framework_splits(root)
    official = Official(root, "test")
    for k, datum in enumerate(official.data):
        clip = splits.test.clips[k]
        picked = [clip.frames[i] for i in splits.test.frame_indices(len(clip.frames))]
        expected = [f"frame_000{n:02d}.jpg" for n in official.frame_numbers(datum, random.randint)]
        assert picked == expected, (datum, seg_of(official, datum))
        _, images, _ = official.getitem(k)
        assert images.shape == (PICK_NUM, 3, SIZE, SIZE)
        assert torch.equal(splits.test[k][0]["visual"], images)


def test_evaluation_frame_pick_control_differs(root):
    """The next frame of each segment gives other tensors: the frame check can fail."""
    splits = framework_splits(root)
    official = Official(root, "test")
    official.frame_numbers = lambda datum, randint: [  # type: ignore[method-assign]
        i * seg_of(official, datum) + seg_of(official, datum) // 2 + 1 for i in range(PICK_NUM)
    ]
    for k in range(len(official.data)):
        assert not torch.equal(splits.test[k][0]["visual"], official.getitem(k)[1])


def test_training_tensors_match_exactly_under_replayed_draws(root):
    splits = framework_splits(root)
    official = Official(root, "train")
    for seed in SEEDS:
        for k, datum in enumerate(official.data):
            torch.manual_seed(seed)
            inputs, _ = splits.train[k]
            seg = seg_of(official, datum)
            torch.manual_seed(seed)
            offsets = [int(torch.randint(0, seg, ())) for _ in range(PICK_NUM)]
            _, images, _ = official.getitem(k, randint=Replay(offsets, seg))
            assert torch.equal(inputs["visual"], images), (seed, datum)


def test_training_crop_and_flip_draws_match(tmp_path):
    """The random part alone, over many draws: the same crop boxes and flips from the same seed."""
    image = tmp_path / "frame.jpg"
    Image.new("RGB", FRAME_SIZE[::-1]).save(image)
    for seed in range(300):
        torch.manual_seed(seed)
        top, left, h, w = crop_params(FRAME_SIZE[1], FRAME_SIZE[0])
        flip = bool(torch.rand(1) < 0.5)
        torch.manual_seed(seed)
        assert random_resized_crop_box(FRAME_SIZE[1], FRAME_SIZE[0]) == (left, top, left + w, top + h)
        assert (float(torch.rand(())) < 0.5) == flip
    torch.manual_seed(0)
    assert load_image(image, SIZE, "crop_flip").shape == (3, SIZE, SIZE)


@pytest.mark.parametrize("file_num", FRAME_COUNTS)
def test_training_frame_draws_have_the_official_distribution(root, file_num):
    """The official draws (Python's ``random``) and the framework's (torch): the same frames of
    each segment, each about equally often (5 sigma of a binomial)."""
    splits = framework_splits(root)
    seg = file_num // PICK_NUM
    rng = random.Random(0)
    torch.manual_seed(0)
    draws = 3000
    official = Counter((i, rng.randint(i * seg + 1, i * seg + seg) - 1) for _ in range(draws) for i in range(PICK_NUM))
    framework = Counter(
        (i, index) for _ in range(draws) for i, index in enumerate(splits.train.frame_indices(file_num))
    )
    assert set(framework) == set(official) == {(i, i * seg + o) for i in range(PICK_NUM) for o in range(seg)}
    sigma = math.sqrt(draws * (1 / seg) * (1 - 1 / seg))
    for counts in (official, framework):
        assert all(abs(n - draws / seg) < 5 * sigma for n in counts.values())
