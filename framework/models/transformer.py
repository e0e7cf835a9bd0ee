"""A small multimodal transformer with dense cross-modal interaction.

Each modality's input becomes a token sequence (:class:`TokenEmbedding`: patches of an image or
spectrogram, patches of every frame, or a few tokens from a vector), with learned position
embeddings. Then ``depth`` layers; in each, every modality's tokens go through self-attention,
cross-attention to the other modalities' tokens (from the layer's input, so the update is
symmetric), and an MLP (pre-norm residual blocks). Layers below ``cross_from`` have no
cross-attention. A modality's feature is the mean of its final tokens; the fusion head sees the
fused features and each unimodal head its modality's feature, as in :class:`LateFusionModel`.

Because of the cross-attention, the unimodal loss of modality ``a`` reaches the parameters of the
other modalities' embeddings and lower layers: there the multimodal loss and *every* unimodal loss
meet (k = 3 losses for two modalities), while a modality's last layer and final norm are reached by
the multimodal loss and its own loss only. The parameter groups are split by module (per modality:
embedding, each layer, final norm); which losses reach which group is not declared here but found
by the gradient engine, which probes autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from ..data.base import DatasetSpec
from .base import MultimodalModel, fusion_and_unimodal_logits, int_attribute
from .fusion import ConcatFusion


class TokenEmbedding(nn.Module):
    """One sample's input -> ``(tokens, dim)``.

    ``(C, H, W)``: non-overlapping ``patch`` patches (clipped to the input size) by a strided conv.
    ``(T, C, H, W)``: the same per frame; the tokens of all frames are concatenated.
    ``(D,)``: ``vector_tokens`` tokens from one linear layer.
    """

    def __init__(self, input_shape: Sequence[int], dim: int, patch: Sequence[int], vector_tokens: int = 4) -> None:
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        self.shape, self.dim = shape, dim
        if len(shape) == 1:
            self.proj: nn.Module = nn.Linear(shape[0], vector_tokens * dim)
            count = vector_tokens
        elif len(shape) in (3, 4):
            channels, height, width = shape[-3:]
            ph, pw = min(int(patch[0]), height), min(int(patch[-1]), width)
            self.proj = nn.Conv2d(channels, dim, (ph, pw), (ph, pw))
            frames = shape[0] if len(shape) == 4 else 1
            count = frames * (height // ph) * (width // pw)
        else:
            raise ValueError(f"TokenEmbedding expects (D,), (C, H, W) or (T, C, H, W) inputs, got shape {shape}")
        self.tokens = count
        self.position = nn.Parameter(torch.zeros(1, count, dim))
        nn.init.trunc_normal_(self.position, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        if len(self.shape) == 1:
            tokens = self.proj(x).view(batch, -1, self.dim)
        else:
            if len(self.shape) == 4:
                x = x.flatten(0, 1)
            tokens = self.proj(x).flatten(2).transpose(1, 2).reshape(batch, -1, self.dim)
        return tokens + self.position


class CrossModalBlock(nn.Module):
    """One modality's part of a layer: self-attention, cross-attention to the other modalities, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, cross: bool) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross = cross
        if cross:
            self.norm_query = nn.LayerNorm(dim)
            self.norm_context = nn.LayerNorm(dim)
            self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        hidden = round(dim * mlp_ratio)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        if self.cross and context is not None:
            kv = self.norm_context(context)
            x = x + self.cross_attn(self.norm_query(x), kv, kv, need_weights=False)[0]
        return x + self.mlp(self.norm_mlp(x))


class CrossModalTransformer(MultimodalModel):
    """Per-modality token embeddings, ``depth`` cross-modal layers, mean-pooled features, heads.

    ``patch_size`` is the default patch (square), ``patches`` overrides it per modality
    (``{name: [h, w]}``). ``fusion`` builds the fusion module from ``in_dims`` (default concat).
    """

    def __init__(
        self,
        spec: DatasetSpec,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        patch_size: int = 16,
        patches: Mapping[str, Sequence[int]] | None = None,
        cross_from: int = 0,
        vector_tokens: int = 4,
        fusion: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        patches = dict(patches or {})
        unknown = sorted(set(patches) - set(spec.modalities))
        if unknown:
            raise ValueError(f"patches given for unknown modalities {unknown}; dataset has {list(spec.modalities)}")
        if depth < 1 or dim % heads:
            raise ValueError(f"need depth >= 1 and dim divisible by heads, got depth={depth}, dim={dim}, heads={heads}")
        self.modalities = tuple(spec.modalities)
        self.embed = nn.ModuleDict(
            {
                m: TokenEmbedding(shape, dim, patches.get(m, (patch_size, patch_size)), vector_tokens)
                for m, shape in spec.modalities.items()
            }
        )
        cross = len(self.modalities) > 1
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {m: CrossModalBlock(dim, heads, mlp_ratio, dropout, cross and i >= cross_from) for m in self.modalities}
            )
            for i in range(depth)
        )
        self.norm = nn.ModuleDict({m: nn.LayerNorm(dim) for m in self.modalities})
        dims = {m: dim for m in self.modalities}
        self.fusion = (fusion or ConcatFusion)(in_dims=dims)
        self.fusion_head = nn.Linear(int_attribute(self.fusion, "out_dim"), spec.num_classes)
        self.unimodal_heads = nn.ModuleDict({m: nn.Linear(dim, spec.num_classes) for m in self.modalities})
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                fan_in = math.prod(module.weight.shape[1:])
                nn.init.trunc_normal_(module.weight, std=1.0 / math.sqrt(fan_in))
                assert module.bias is not None  # the patch embeddings keep their bias
                nn.init.zeros_(module.bias)

    def encode(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens = {m: self.embed[m](inputs[m]) for m in self.modalities}
        for layer in self._layer_dicts():
            tokens = {m: layer[m](tokens[m], self._context(tokens, m)) for m in self.modalities}
        return {m: self.norm[m](tokens[m]).mean(dim=1) for m in self.modalities}

    def _layer_dicts(self) -> Iterable[nn.ModuleDict]:
        """The layers, each a ModuleDict of per-modality blocks (ModuleList types its items as Module)."""
        return cast("Iterable[nn.ModuleDict]", self.layers)

    def _context(self, tokens: dict[str, Tensor], modality: str) -> Tensor | None:
        others = [t for m, t in tokens.items() if m != modality]
        return torch.cat(others, dim=1) if others else None

    def classify(self, features: dict[str, Tensor], detach_unimodal: bool = False) -> dict[str, Tensor]:
        return fusion_and_unimodal_logits(features, self.fusion, self.fusion_head, self.unimodal_heads, detach_unimodal)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Split by module: ``embed.<m>``, ``layer<i>.<m>``, ``norm.<m>``; the engine finds the losses
        that reach each."""
        groups: dict[str, list[nn.Parameter]] = {}
        for m in self.modalities:
            groups[f"embed.{m}"] = [p for p in self.embed[m].parameters() if p.requires_grad]
        for i, layer in enumerate(self._layer_dicts()):
            for m in self.modalities:
                groups[f"layer{i}.{m}"] = [p for p in layer[m].parameters() if p.requires_grad]
        for m in self.modalities:
            groups[f"norm.{m}"] = [p for p in self.norm[m].parameters() if p.requires_grad]
        return groups
