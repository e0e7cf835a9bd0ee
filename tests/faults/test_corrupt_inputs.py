"""Corrupt input files: every corrupt-sample error is ONE line naming the file and the reason.

A truncated WAV (its header promises more samples than the file holds) is corrupt, where a clip
shorter than ``duration`` is not; a preprocessed ``.pt`` that torch cannot read is named as a
corrupt data file, not as a checkpoint. Through the command line, with DataLoader workers, the
error reaches the terminal and the run's ``error`` tag as one line.
"""

from __future__ import annotations

import csv
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.cli import run_main, runs_in

from framework.data import cremad
from framework.data.audio import AudioReadError, read_wav, write_wav
from framework.data.base import CorruptSampleError

pytestmark = [pytest.mark.slow, pytest.mark.faults]  # CLI runs in subprocesses

TRUNCATED_SIZE = 24022  # bytes: `truncate -s 24022` on a 1 s, 16 kHz, 16-bit clip (32044 bytes)


def clips() -> dict[str, list[str]]:
    return {
        "train": [f"10{i:02d}_DFA_{c}_XX@{c}" for i, c in enumerate(cremad.CLASSES * 2)],
        "test": [f"20{i:02d}_IEO_{c}_HI@{c}" for i, c in enumerate(cremad.CLASSES)],
    }


def write_tree(writers, root: Path, layout: str) -> Path:
    if layout == "raw":
        writers.write_av_manifest(root, clips(), cremad.LAYOUTS["raw"], wav_seconds=1.0)
    else:
        writers.write_av_manifest(
            root, clips(), cremad.LAYOUTS["preprocessed"], classes=cremad.CLASSES, spectrogram_shape=(32, 20)
        )
    return root


def first_test_clip(root: Path) -> str:
    with (root / "test.csv").open() as f:
        return next(csv.reader(f))[0]


def test_truncated_wav_is_refused_naming_the_file_and_the_sizes(tmp_path):
    path = tmp_path / "clip.wav"
    write_wav(path, np.zeros(16000), 16000)
    assert path.stat().st_size == 32044
    os.truncate(path, TRUNCATED_SIZE)
    with pytest.raises(AudioReadError) as raised:
        read_wav(path)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message and "truncated" in message, message
    assert "16000 frames" in message and str(TRUNCATED_SIZE - 44) in message, message


def test_short_but_whole_wav_is_accepted(tmp_path):
    path = tmp_path / "short.wav"
    write_wav(path, np.full(800, 0.25), 16000)  # 0.05 s: shorter than any duration, header consistent
    samples, rate = read_wav(path)
    assert rate == 16000 and samples.shape == (800,)


def test_wav_with_trailing_bytes_is_accepted(tmp_path):
    path = tmp_path / "trailing.wav"
    write_wav(path, np.full(800, 0.25), 16000)
    with path.open("ab") as f:
        f.write(b"LIST\x04\x00\x00\x00INFO")  # a chunk after the data: more bytes than the data chunk
    assert read_wav(path)[0].shape == (800,)


def corrupt(root: Path, clip: str, kind: str) -> Path:
    """Damage ``clip`` of the tree at ``root`` as ``kind`` says; return the file the error must name."""
    if kind == "truncated_wav":
        path = root / "AudioWAV" / f"{clip}.wav"
        os.truncate(path, TRUNCATED_SIZE)
    elif kind == "corrupt_pt":
        path = root / "audio" / f"{clip}.pt"
        os.truncate(path, path.stat().st_size // 2)
    elif kind == "garbage_pt":
        path = root / "audio" / f"{clip}.pt"
        path.write_bytes(b"not a torch file")
    elif kind == "pt_not_a_tensor":
        path = root / "audio" / f"{clip}.pt"
        torch.save({"not": "a tensor"}, path)
    elif kind == "garbage_frame":
        path = sorted((root / "visual" / clip).iterdir())[0]
        path.write_bytes(b"garbage")
    elif kind == "missing_audio":
        path = root / "audio" / f"{clip}.pt"
        path.unlink()
    elif kind in ("unknown_label", "no_label"):
        path = root / "test.csv"
        with path.open() as f:
            table = list(csv.reader(f))
        table[0] = [clip, "BORED"] if kind == "unknown_label" else [clip]
        with path.open("w", newline="") as f:
            csv.writer(f).writerows(table)
    else:
        raise AssertionError(kind)
    return path


LOAD_TIME = ("truncated_wav", "corrupt_pt", "garbage_pt", "pt_not_a_tensor", "garbage_frame")
INDEX_TIME = ("missing_audio", "unknown_label", "no_label")


@pytest.mark.parametrize("kind", LOAD_TIME + INDEX_TIME)
def test_every_corrupt_sample_error_is_one_line_naming_the_file(tmp_path, writers, kind):
    root = write_tree(writers, tmp_path / "cremad", "raw" if kind == "truncated_wav" else "preprocessed")
    clip = first_test_clip(root)
    path = corrupt(root, clip, kind)
    with pytest.raises(CorruptSampleError) as raised:
        splits = cremad.cremad_splits(root, on_corrupt="error", image_size=16)
        splits.test[0]
    message = str(raised.value)
    assert "\n" not in message, message
    assert str(path) in message and repr(clip) in message, message
    if kind in ("corrupt_pt", "garbage_pt"):
        assert "corrupt preprocessed" in message and "checkpoint" not in message, message
    if kind == "truncated_wav":
        assert "truncated" in message, message


def test_truncated_wav_is_skipped_and_counted(tmp_path, writers):
    root = write_tree(writers, tmp_path / "cremad", "raw")
    corrupt(root, first_test_clip(root), "truncated_wav")
    splits = cremad.cremad_splits(root, image_size=16)
    splits.test[0]
    assert splits.skipped()["test"] == 1


CLI_KINDS = ("truncated_wav", "corrupt_pt")


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory, writers) -> dict[str, tuple[subprocess.CompletedProcess[str], Path, Path]]:
    """One run per kind of corruption, both at once (process start dominates)."""

    def one(kind: str) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
        tmp = tmp_path_factory.mktemp(kind)
        root = write_tree(writers, tmp / "cremad", "raw" if kind == "truncated_wav" else "preprocessed")
        path = corrupt(root, first_test_clip(root), kind)
        result = run_main(
            tmp, "experiment=cremad_resnet18", "model.encoder.width=8", f"dataset.root={root}",
            "dataset.image_size=16", "dataset.on_corrupt=error", "dataset.sample_rate=16000", "dataset.duration=1.0",
            "trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.num_workers=2",
            "trainer.statistics.probe_size=4", "trainer.statistics.noise_every=0",
        )  # fmt: skip
        return result, tmp, path

    with ThreadPoolExecutor(max_workers=len(CLI_KINDS)) as pool:
        return dict(zip(CLI_KINDS, pool.map(one, CLI_KINDS), strict=True))


@pytest.mark.parametrize("kind", CLI_KINDS)
def test_cli_run_fails_with_one_line_naming_the_file(cli_results, kind):
    """Before: the truncated WAV was padded with zeros and the run FINISHED (exit 0, data/skipped/* 0);
    the corrupt .pt failed with a 35-line worker traceback quoting torch's 'checkpoint file is corrupted'."""
    result, tmp_path, path = cli_results[kind]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[-1].startswith("error: ") and str(path) in lines[-1], result.stderr[-3000:]
    assert "checkpoint" not in lines[-1], lines[-1]
    (run,) = runs_in(tmp_path)
    assert run.info.status == "FAILED"
    tag = run.data.tags["error"]
    assert "\n" not in tag and str(path) in tag, tag


def test_no_readable_spectrogram_to_take_the_shape_from_names_one(tmp_path, writers):
    root = write_tree(writers, tmp_path / "cremad", "preprocessed")
    for path in (root / "audio").iterdir():
        path.write_bytes(b"not a torch file")
    with pytest.raises(CorruptSampleError) as raised:
        cremad.cremad_splits(root, image_size=16)
    message = str(raised.value)
    assert "\n" not in message and str(root / "audio") in message and "audio_shape" in message, message
