"""What a run prints: one line per epoch, as Lightning users expect."""

from __future__ import annotations

from .. import metric_names as names


def epoch_line(epoch: int, epochs: int, train: dict[str, float], val_accuracy: float, seconds: float) -> str:
    """``epoch 3/8  loss multimodal 0.512 audio 0.701  val acc 0.8420  conflict rate encoder.audio 0.31
    (12.3 s)``: the epoch's train losses, validation accuracy, conflict rate per group, time taken."""
    prefix = names.train_loss("")
    losses = " ".join(f"{key[len(prefix) :]} {value:.3f}" for key, value in train.items() if key.startswith(prefix))
    suffix = f"/{names.CONFLICT_RATE}"
    conflicts = " ".join(
        f"{key[len(names.GRAD_PREFIX) : -len(suffix)]} {value:.2f}"
        for key, value in train.items()
        if key.endswith(suffix)
    )
    line = f"epoch {epoch + 1}/{epochs}  loss {losses}  val acc {val_accuracy:.4f}"
    return line + (f"  conflict rate {conflicts}" if conflicts else "") + f"  ({seconds:.1f} s)"
