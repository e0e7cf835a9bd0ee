"""WAV reading (stdlib wave + numpy), resampling and the torch.stft log spectrogram."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from framework.data.audio import (
    AudioReadError,
    SpectrogramSettings,
    fit_shape,
    load_spectrogram,
    log_spectrogram,
    read_wav,
    resample,
    write_wav,
)


def _write_pcm(path, samples: np.ndarray, width: int, channels: int = 1, rate: int = 8000) -> None:
    """Encode int samples (already scaled to the width) as PCM the way WAV stores them."""
    if width == 1:
        raw = (samples + 128).astype(np.uint8).tobytes()
    elif width == 3:
        v = samples.astype(np.int64) & 0xFFFFFF
        raw = np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=-1).astype(np.uint8).tobytes()
    else:
        raw = samples.astype({2: "<i2", 4: "<i4"}[width]).tobytes()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(raw)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_read_wav_scales_every_sample_width_to_unit_range(tmp_path, width):
    full = 2 ** (8 * width - 1)
    ints = np.array([0, full // 2, -full // 2, full - 1, -full], dtype=np.int64)
    path = tmp_path / f"w{width}.wav"
    _write_pcm(path, ints, width, rate=11025)
    samples, rate = read_wav(path)
    assert rate == 11025 and samples.dtype == np.float32
    np.testing.assert_allclose(samples, ints / full, atol=1e-6)


def test_read_wav_averages_channels(tmp_path):
    left, right = np.array([1000, -2000, 3000]), np.array([3000, 2000, -1000])
    _write_pcm(tmp_path / "s.wav", np.stack([left, right], 1).reshape(-1), 2, channels=2)
    samples, _ = read_wav(tmp_path / "s.wav")
    np.testing.assert_allclose(samples, (left + right) / 2 / 32768, atol=1e-6)


def test_write_then_read_round_trips(tmp_path):
    x = 0.5 * np.sin(np.linspace(0, 20, 1000))
    write_wav(tmp_path / "x.wav", x, 16000)
    samples, rate = read_wav(tmp_path / "x.wav")
    assert rate == 16000
    np.testing.assert_allclose(samples, x, atol=1 / 32767)


def test_corrupt_wav_names_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00not a wave file")
    with pytest.raises(AudioReadError, match="bad.wav"):
        read_wav(bad)


def test_resample_keeps_a_band_limited_tone():
    rate, target, freq = 16000, 22050, 440.0
    t = torch.arange(rate) / rate
    y = resample(torch.sin(2 * torch.pi * freq * t), rate, target)
    assert y.shape == (target,)
    expected = torch.sin(2 * torch.pi * freq * torch.arange(target) / target)
    torch.testing.assert_close(y, expected, atol=1e-3, rtol=0)
    assert resample(t, rate, rate) is t


def test_spectrogram_shape_matches_the_reference_for_cremad():
    settings = SpectrogramSettings()  # 22050 Hz, 3 s, n_fft 512, hop 353
    assert settings.shape == (1, 257, 188)
    spec = log_spectrogram(np.zeros(16000, np.float32) + 0.1, 16000, settings)
    assert spec.shape == (1, 257, 188) and spec.dtype == torch.float32
    assert torch.isfinite(spec).all()


def test_spectrogram_peak_is_at_the_tone_and_equals_a_direct_dft():
    settings = SpectrogramSettings(sample_rate=8000, duration=1.0, n_fft=256, hop_length=128)
    freq = 1000.0  # bin 1000 / 8000 * 256 = 32
    x = (0.5 * np.sin(2 * np.pi * freq * np.arange(8000) / 8000)).astype(np.float32)
    spec = log_spectrogram(x, 8000, settings)
    assert int(spec[0, :, 10].argmax()) == 32
    # frame 10 is centred at sample 1280: a periodic Hann window over samples 1152..1407
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(256) / 256)
    direct = np.abs(np.fft.rfft(x[1280 - 128 : 1280 + 128] * window))
    np.testing.assert_allclose(np.exp(spec[0, :, 10].numpy()) - 1e-7, direct, atol=1e-4 * direct.max())


def test_short_clips_are_tiled_and_clipped_as_the_reference():
    settings = SpectrogramSettings(sample_rate=1000, duration=1.0, n_fft=64, hop_length=32)
    short = np.full(300, 2.0, np.float32)  # tiled to 1000 samples, clipped to 1.0
    long = np.ones(1000, np.float32)
    torch.testing.assert_close(log_spectrogram(short, 1000, settings), log_spectrogram(long, 1000, settings))


def test_load_spectrogram_from_a_file(tmp_path):
    write_wav(tmp_path / "a.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 8000), 16000)
    settings = SpectrogramSettings(sample_rate=16000, duration=1.0)
    assert load_spectrogram(tmp_path / "a.wav", settings).shape == settings.shape


def test_fit_shape_pads_and_crops_at_the_end():
    x = torch.arange(12.0).view(1, 3, 4)
    y = fit_shape(x, (1, 4, 2))
    assert y.shape == (1, 4, 2)
    torch.testing.assert_close(y[0, :3], x[0, :, :2])
    assert (y[0, 3] == 0).all()
    with pytest.raises(ValueError, match="cannot fit"):
        fit_shape(x, (3, 4))
