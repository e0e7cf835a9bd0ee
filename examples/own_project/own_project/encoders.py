"""A GRU encoder for a sequence modality, following the framework's encoder contract."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

POOLING = ("last", "mean")


class GRUEncoder(nn.Module):
    """``[T, F]`` sequence -> GRU -> last hidden state (or mean over time) -> ReLU(Linear) to ``dim``.

    The contract ``framework.models.LateFusionModel`` relies on: the constructor takes
    ``input_shape`` (one sample, here ``(T, F)``) as a keyword, the module exposes ``out_dim``
    (the width of its features), and ``forward`` maps a batch ``[B, T, F]`` to ``[B, out_dim]``.
    """

    def __init__(
        self, input_shape: Sequence[int], hidden: int = 32, dim: int = 32, layers: int = 1, pooling: str = "last"
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"GRUEncoder expects (T, F) sequences, got shape {tuple(input_shape)}")
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got {pooling!r}")
        self.input_shape = tuple(input_shape)
        self.gru = nn.GRU(input_size=input_shape[1], hidden_size=hidden, num_layers=layers, batch_first=True)
        self.proj = nn.Sequential(nn.Linear(hidden, dim), nn.ReLU())
        self.pooling = pooling
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        outputs, last = self.gru(x)  # outputs [B, T, hidden], last [layers, B, hidden]
        pooled = last[-1] if self.pooling == "last" else outputs.mean(dim=1)
        return self.proj(pooled)
