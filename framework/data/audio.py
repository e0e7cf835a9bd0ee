"""Audio without librosa: WAV reading (stdlib ``wave`` + numpy), resampling and a log-magnitude
spectrogram computed with ``torch.stft``.

:func:`log_spectrogram` follows the reference code's recipe (OGM-GE / MMPareto, CREMA-D):
``samples = tile(wav at sample_rate, to duration)[:sample_rate * duration]``, clipped to [-1, 1],
``stft(n_fft=512, hop_length=353)`` with a periodic Hann window and centred frames, then
``log(|stft| + 1e-7)``. For 3 s at 22,050 Hz that is a ``(257, 188)`` spectrogram.
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


class AudioReadError(ValueError):
    """A WAV file could not be decoded; the message names the file."""


UNKNOWN_LENGTH = 0xFFFFFFFF
"""The data-chunk size that streaming writers put in a WAV header when the length is not known."""


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file: float32 mono samples in [-1, 1] (channels averaged) and the sample rate.

    A file with fewer bytes of audio than its header's data chunk declares is truncated, and refused
    (:class:`AudioReadError`); a short clip whose header agrees with its data is read as it is."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate, frames = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            raw = f.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise AudioReadError(f"{path}: not a readable PCM WAV file ({exc})") from exc
    declared = frames * channels * width
    if len(raw) < declared and frames != UNKNOWN_LENGTH // (channels * width):
        raise AudioReadError(
            f"{path}: truncated WAV file: its header declares {frames} frames ({declared} bytes of audio), "
            f"the file holds {len(raw)} bytes of them"
        )
    if width == 1:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8)
        b = b[: len(b) - len(b) % 3].reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        samples = value.astype(np.float32) / float(1 << 23)
    elif width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise AudioReadError(f"{path}: unsupported sample width {width} bytes")
    usable = len(samples) - len(samples) % channels
    samples = samples[:usable].reshape(-1, channels).mean(axis=1)
    if samples.size == 0:
        raise AudioReadError(f"{path}: no audio samples")
    return samples.astype(np.float32, copy=False), rate


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write mono float samples in [-1, 1] as 16-bit PCM (for fixtures and examples)."""
    data = (np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0) * 32767.0).round().astype("<i2")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(rate))
        f.writeframes(data.tobytes())


def resample(samples: Tensor, rate: int, target: int) -> Tensor:
    """Band-limited resampling by zero-padding or truncating the spectrum (as ``scipy.signal.resample``)."""
    if rate == target:
        return samples
    n = samples.shape[-1]
    m = max(1, round(n * target / rate))
    spectrum = torch.fft.rfft(samples.double())
    bins = m // 2 + 1
    if spectrum.shape[-1] >= bins:
        spectrum = spectrum[..., :bins]
    else:
        spectrum = torch.cat([spectrum, spectrum.new_zeros(*spectrum.shape[:-1], bins - spectrum.shape[-1])], dim=-1)
    return (torch.fft.irfft(spectrum, n=m) * (m / n)).to(samples.dtype)


@dataclass(frozen=True)
class SpectrogramSettings:
    """How a waveform becomes the audio modality: ``(1, n_fft // 2 + 1, frames)``."""

    sample_rate: int = 22050
    duration: float = 3.0
    n_fft: int = 512
    hop_length: int = 353

    def __post_init__(self) -> None:
        if self.sample_rate < 1 or self.duration <= 0 or self.n_fft < 2 or self.hop_length < 1:
            raise ValueError(f"invalid spectrogram settings {self}")

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.duration))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, self.n_fft // 2 + 1, 1 + self.num_samples // self.hop_length)


def log_spectrogram(samples: np.ndarray | Tensor, rate: int, settings: SpectrogramSettings) -> Tensor:
    """``(1, n_fft // 2 + 1, frames)`` float32 log-magnitude spectrogram of a mono waveform."""
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    x = resample(x, rate, settings.sample_rate)
    n = settings.num_samples
    if x.numel() == 0:
        x = torch.zeros(n)
    x = x.repeat(math.ceil(n / x.numel()))[:n].clamp(-1.0, 1.0)
    window = torch.hann_window(settings.n_fft, periodic=True)
    stft = torch.stft(
        x, settings.n_fft, hop_length=settings.hop_length, window=window,
        center=True, pad_mode="constant", return_complex=True,
    )  # fmt: skip
    return torch.log(stft.abs() + 1e-7).unsqueeze(0).float()


def load_spectrogram(path: str | Path, settings: SpectrogramSettings) -> Tensor:
    """Read a WAV file and return its log spectrogram."""
    samples, rate = read_wav(path)
    return log_spectrogram(samples, rate, settings)


def fit_shape(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Zero-pad or crop each trailing dimension of ``x`` (at the end) to ``shape``."""
    if tuple(x.shape) == tuple(shape):
        return x
    if x.dim() != len(shape):
        raise ValueError(f"cannot fit a tensor of shape {tuple(x.shape)} to {tuple(shape)}")
    x = x[tuple(slice(0, s) for s in shape)]
    pad: list[int] = []
    for have, want in zip(reversed(x.shape), reversed(shape)):
        pad += [0, want - have]
    return torch.nn.functional.pad(x, pad)
