"""MMPareto in a PyTorch Lightning loop, through ``framework.IntegratedBackward``.

Install the extra (``pip install -e .[lightning]``), then::

    python examples/lightning_mmpareto.py --epochs 2 --precision bf16-mixed

Manual optimisation: ``training_step`` computes the three losses and calls the integrator instead of
``self.manual_backward(sum(losses))``; it adds the MMPareto update to the encoders' ``.grad`` and the
summed gradient to the heads. See docs/lightning.md for what is supported (32-true, bf16-mixed,
16-mixed with Lightning's GradScaler; one process only).
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader

from framework import IntegratedBackward
from framework.data.synthetic import synthetic_splits

MODALITIES = {"audio": {"dim": 16, "signal": 0.5}, "visual": {"dim": 32, "signal": 0.25}}  # audio is the easy one
CLASSES = 4
Batch = tuple[dict[str, Tensor], Tensor]


def refuse_ddp(world_size: int) -> None:
    if world_size > 1:
        raise RuntimeError(
            f"lightning_mmpareto: {world_size} processes refused: IntegratedBackward integrates each rank's local "
            "per-loss gradients, and Lightning's DDP all-reduce would then average integrated updates, not the "
            "per-loss gradients the integrator must see; use `python -m framework.main` with `distributed` for several GPUs"
        )


class AVModule(L.LightningModule):
    def __init__(self, integrator: str = "mmpareto", lr: float = 0.05, hidden: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.encoders = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(int(o["dim"]), hidden), nn.ReLU()) for m, o in MODALITIES.items()}
        )
        self.fusion = nn.Linear(hidden * len(MODALITIES), CLASSES)
        self.heads = nn.ModuleDict({m: nn.Linear(hidden, CLASSES) for m in MODALITIES})
        self.integrated = IntegratedBackward(dict(self.encoders.items()), integrator)

    def forward(self, inputs: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        features = {m: self.encoders[m](inputs[m]) for m in MODALITIES}
        return features, self.fusion(torch.cat(list(features.values()), dim=1))

    def losses(self, batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        inputs, y = batch
        features, logits = self(inputs)
        losses = {"multimodal": cross_entropy(logits, y)}
        losses.update({m: cross_entropy(self.heads[m](f), y) for m, f in features.items()})
        return features, losses

    def setup(self, stage: str) -> None:
        refuse_ddp(self.trainer.world_size)
        self.integrated.scaler = self.trainer.scaler  # the GradScaler under 16-mixed, None otherwise

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        opt = self.optimizers()
        features, losses = self.losses(batch)
        decisions = self.integrated(losses, features)  # instead of self.manual_backward(sum(losses.values()))
        opt.step()  # under 16-mixed: scaler.unscale_, scaler.step (skips an overflow), scaler.update
        opt.zero_grad()
        n = len(batch[1])
        self.log_dict({f"loss/{k}": v.detach().float() for k, v in losses.items()}, prog_bar=True, batch_size=n)
        self.log_dict(IntegratedBackward.metrics(decisions), on_step=False, on_epoch=True, batch_size=n)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        inputs, y = batch
        accuracy = (self(inputs)[1].argmax(1) == y).float().mean()
        self.log("val/acc", accuracy, prog_bar=True, batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["integrator"] = self.integrated.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.integrated.load_state_dict(checkpoint["integrator"])


def train(
    epochs: int, precision: str | None, integrator: str = "mmpareto", root: str | None = None, **trainer_kwargs: Any
) -> tuple[L.Trainer, AVModule]:
    """Fit on the synthetic data; logs and checkpoints go under ``root`` (a new temporary folder by default)."""
    L.seed_everything(0, verbose=False)
    splits = synthetic_splits(MODALITIES, num_classes=CLASSES, train_size=512, val_size=256)
    root = root or tempfile.mkdtemp(prefix="lightning_mmpareto_")
    options = {
        "accelerator": "auto",
        "devices": 1,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "log_every_n_steps": 4,
    }
    trainer = L.Trainer(
        max_epochs=epochs, precision=precision, default_root_dir=root, logger=CSVLogger(root, name="lightning_logs"),
        enable_progress_bar=False, **{**options, **trainer_kwargs},
    )  # fmt: skip
    module = AVModule(integrator)
    trainer.fit(module, DataLoader(splits.train, batch_size=64, shuffle=True), DataLoader(splits.val, batch_size=256))
    return trainer, module


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    parser.add_argument("--integrator", default="mmpareto")
    parser.add_argument("--root", default=None, help="where Lightning writes (default: a new temporary folder)")
    args = parser.parse_args(argv)
    trainer, _ = train(args.epochs, args.precision, args.integrator, args.root)
    results = {k: float(v) for k, v in trainer.callback_metrics.items() if k == "val/acc" or "/cos/" in k}
    print(f"final validation accuracy: {results['val/acc']:.3f}   (logs: {trainer.log_dir})")
    for name, value in sorted(results.items()):
        if "/cos/" in name:  # grad/<group>/cos/<a>.<b>: that group's mean over the last epoch
            print(f"mean cosine {name.split('/')[1]:>7} ({name.split('/')[-1]}): {value:+.3f}")
    return results


if __name__ == "__main__":
    main()
