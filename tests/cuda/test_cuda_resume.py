"""On CUDA: ``experiment=smoke`` stopped after its first epoch and resumed ends like an
uninterrupted two-epoch run. ``pytest -m cuda``."""

from __future__ import annotations

import pytest
import torch

from framework.main import train
from framework.training.trainer import Trainer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

STEPS_PER_EPOCH = 8  # smoke: 512 samples / 64 per batch
OVERRIDES = ("experiment=smoke", "device=cuda", "trainer.epochs=2", "trainer.statistics.noise_every=5")


def test_resumed_run_on_cuda_ends_like_an_uninterrupted_one(compose_cfg, tmp_path, monkeypatch):
    expected = train(compose_cfg(*OVERRIDES, f"checkpoint.dir={tmp_path / 'straight'}"))

    # stopped at the first step of epoch 2, after epoch 1's checkpoint (the cosine schedule's
    # T_max stays trainer.epochs=2, so the resumed run is the same run), then resumed
    folder = f"checkpoint.dir={tmp_path / 'stopped'}"
    original = Trainer.train_step

    def stop_in_epoch_two(self, *args, **kwargs):
        if self.state.step == STEPS_PER_EPOCH:
            raise KeyboardInterrupt()
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", stop_in_epoch_two)
        with pytest.raises(KeyboardInterrupt):
            train(compose_cfg(*OVERRIDES, folder))
    resumed = train(compose_cfg(*OVERRIDES, folder, "resume=true"))

    assert resumed.keys() == expected.keys()
    for key, value in expected.items():  # the same kernels in the same order: equal up to rounding
        assert resumed[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
