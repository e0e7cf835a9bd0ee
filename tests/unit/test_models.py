"""ResNet-18 encoders, fusion modules and the cross-modal transformer, checked against the gradient engine."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from framework.data.base import DatasetSpec
from framework.integrators import INTEGRATORS, get_integrator
from framework.losses import MultitaskLoss
from framework.models.encoders import MLPEncoder
from framework.models.fusion import ConcatFusion, FiLMFusion, GatedFusion, SumFusion
from framework.models.late_fusion import LateFusionModel
from framework.models.resnet import ResNet18Encoder
from framework.models.transformer import CrossModalTransformer, TokenEmbedding
from framework.training.gradients import GradientEngine

AV = DatasetSpec({"audio": (1, 40, 30), "visual": (3, 3, 32, 32)}, num_classes=6)
TOKENS = DatasetSpec({"audio": (1, 13, 20), "image": (1, 28, 28)}, num_classes=10)


def batch(spec: DatasetSpec, n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, *shape, generator=g) for m, shape in spec.modalities.items()}
    return inputs, torch.randint(spec.num_classes, (n,), generator=g)


def engine_step(model, integrator: str, inputs, labels):
    engine = GradientEngine(model, get_integrator(integrator))
    features = model.encode(inputs)
    steps = engine.backward(features, MultitaskLoss()(model.classify(features), labels), need_decisions=True)
    return engine, steps


# ---------------------------------------------------------------- ResNet-18


def test_resnet18_has_torchvision_resnet18_parameter_count():
    # torchvision's resnet18 without its fc layer: 11,689,512 - (512 * 1000 + 1000) = 11,176,512
    assert sum(p.numel() for p in ResNet18Encoder((3, 224, 224)).parameters()) == 11_176_512
    # one input channel (the audio encoder): the first conv has 64 * 1 * 7 * 7 weights, not 64 * 3 * 7 * 7
    assert sum(p.numel() for p in ResNet18Encoder((1, 257, 188)).parameters()) == 11_176_512 - 64 * 2 * 49


@pytest.mark.parametrize("shape", [(1, 40, 30), (3, 32, 32), (2, 3, 32, 32), (5, 1, 24, 24)])
def test_resnet18_output_is_8_times_width(shape):
    encoder = ResNet18Encoder(shape, width=8)
    assert encoder.out_dim == 64
    assert encoder(torch.randn(3, *shape)).shape == (3, 64)


def test_resnet18_pools_frames_over_time_like_the_reference():
    """(B, T, C, H, W) -> CNN on B*T images -> (B, C, T, H, W) -> adaptive_avg_pool3d = mean over frames."""
    torch.manual_seed(0)
    encoder = ResNet18Encoder((3, 3, 32, 32), width=8).eval()
    frames = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        got = encoder(frames)
        per_frame = torch.stack([F.adaptive_avg_pool2d(encoder.trunk(frames[:, t]), 1).flatten(1) for t in range(3)], 1)
    torch.testing.assert_close(got, per_frame.mean(1), rtol=1e-5, atol=1e-6)
    # the frames are not interchangeable with samples: each sample pools its own frames only
    with torch.no_grad():
        torch.testing.assert_close(encoder(frames[1:]), got[1:], rtol=1e-5, atol=1e-6)


def test_resnet18_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(T, C, H, W\)"):
        ResNet18Encoder((16,))


def test_late_fusion_with_resnet18_av_and_per_modality_override():
    model = LateFusionModel(
        AV, partial(ResNet18Encoder, width=8), ConcatFusion, encoders={"audio": partial(MLPEncoder, hidden=[8], dim=16)}
    )
    assert isinstance(model.encoders["visual"], ResNet18Encoder) and isinstance(model.encoders["audio"], MLPEncoder)
    inputs, labels = batch(AV)
    logits = model(inputs)
    assert {k: tuple(v.shape) for k, v in logits.items()} == {"multimodal": (4, 6), "audio": (4, 6), "visual": (4, 6)}
    _, steps = engine_step(model, "mmpareto", inputs, labels)
    assert [(s.group, s.losses) for s in steps] == [
        ("encoder.audio", ("multimodal", "audio")),
        ("encoder.visual", ("multimodal", "visual")),
    ]


# ---------------------------------------------------------------- fusion


DIMS = {"a": 6, "b": 4, "c": 5}


def feats(n: int = 3):
    torch.manual_seed(1)
    return {m: torch.randn(n, d) for m, d in DIMS.items()}


def test_concat_fusion_keeps_its_api():
    fusion = ConcatFusion(in_dims=DIMS)
    x = feats()
    assert fusion.out_dim == 15
    torch.testing.assert_close(fusion(x), torch.cat([x["a"], x["b"], x["c"]], 1))


def test_sum_fusion_sums_linear_projections():
    fusion = SumFusion(in_dims=DIMS, dim=7)
    x = feats()
    expected = sum(F.linear(x[m], fusion.proj[m].weight, fusion.proj[m].bias) for m in DIMS)
    torch.testing.assert_close(fusion(x), expected)
    assert fusion.out_dim == 7


def test_film_fusion_modulates_the_others_by_the_condition():
    fusion = FiLMFusion(in_dims=DIMS, dim=7, condition="b")
    x = feats()
    gamma, beta = fusion.film(x["b"]).split(7, 1)
    h = fusion.proj["a"](x["a"]) + fusion.proj["c"](x["c"])
    torch.testing.assert_close(fusion(x), gamma * h + beta)
    assert FiLMFusion(in_dims=DIMS).condition == "a"


def test_gated_fusion_gates_the_others():
    fusion = GatedFusion(in_dims=DIMS, dim=7, gate="c")
    x = feats()
    h = fusion.proj["a"](x["a"]) + fusion.proj["b"](x["b"])
    torch.testing.assert_close(fusion(x), torch.sigmoid(fusion.gate_proj(x["c"])) * h)


@pytest.mark.parametrize("cls,key", [(FiLMFusion, "condition"), (GatedFusion, "gate")])
def test_conditioning_modality_must_exist_and_two_modalities_are_needed(cls, key):
    with pytest.raises(ValueError, match="'z' is not one of the modalities"):
        cls(in_dims=DIMS, **{key: "z"})
    with pytest.raises(ValueError, match="at least two modalities"):
        cls(in_dims={"a": 3})


@pytest.mark.parametrize("fusion", [ConcatFusion, SumFusion, FiLMFusion, GatedFusion])
def test_every_fusion_trains_only_through_the_multimodal_loss(fusion):
    model = LateFusionModel(AV, partial(ResNet18Encoder, width=8), fusion)
    inputs, labels = batch(AV)
    engine, steps = engine_step(model, "sum", inputs, labels)
    assert len(steps) == 2
    fusion_params = list(model.fusion.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fusion_params)
    assert {id(p) for p in fusion_params} <= {id(p) for p in engine.head_params}


# ---------------------------------------------------------------- transformer


def small_transformer(spec=TOKENS, **kwargs):
    torch.manual_seed(0)
    options = dict(dim=32, depth=3, heads=4, patch_size=7, patches={"audio": [13, 4]})
    options.update(kwargs)
    return CrossModalTransformer(spec, **options)


@pytest.mark.parametrize(
    "shape,patch,tokens",
    [
        ((1, 13, 20), (13, 4), 5),
        ((1, 28, 28), (7, 7), 16),
        ((2, 3, 32, 32), (16, 16), 8),
        ((12,), (1, 1), 4),
        ((1, 8, 8), (16, 16), 1),
    ],
)
def test_token_embedding_counts(shape, patch, tokens):
    embedding = TokenEmbedding(shape, 16, patch)
    assert embedding.tokens == tokens
    assert embedding(torch.randn(3, *shape)).shape == (3, tokens, 16)


def test_transformer_parameter_groups_cover_the_trunk_and_are_disjoint():
    model = small_transformer()
    groups = model.parameter_groups()
    assert list(groups) == [
        "embed.audio", "embed.image",
        "layer0.audio", "layer0.image", "layer1.audio", "layer1.image", "layer2.audio", "layer2.image",
        "norm.audio", "norm.image",
    ]  # fmt: skip
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids))
    heads = {id(p) for name, p in model.named_parameters() if "head" in name or name.startswith("fusion")}
    assert set(ids) | heads == {id(p) for p in model.parameters()}


def test_engine_finds_three_losses_on_the_shared_groups():
    model = small_transformer()
    inputs, labels = batch(TOKENS, n=8)
    engine, steps = engine_step(model, "mmpareto", inputs, labels)
    reach = {s.group: s.losses for s in steps}
    for m in ("audio", "image"):
        for group in (f"embed.{m}", f"layer0.{m}", f"layer1.{m}"):
            assert reach[group] == ("multimodal", "audio", "image")
        assert reach[f"layer2.{m}"] == ("multimodal", m)
        assert reach[f"norm.{m}"] == ("multimodal", m)
    assert engine.plan.packs == (("multimodal",), ("audio",), ("image",))  # unimodal losses overlap: no packing
    for step in steps:
        assert step.decision.weights.shape == (len(step.losses),)


def test_without_cross_attention_the_groups_are_reached_as_in_late_fusion():
    model = small_transformer(cross_from=3)
    inputs, labels = batch(TOKENS, n=8)
    engine, steps = engine_step(model, "mmpareto", inputs, labels)
    assert all(s.losses == ("multimodal", s.group.split(".")[1]) for s in steps)
    assert engine.plan.packs == (("multimodal",), ("audio", "image"))


def test_cross_from_leaves_lower_layers_unimodal_but_still_shared_by_three_losses():
    model = small_transformer(cross_from=2)
    assert not model.layers[0]["audio"].cross and model.layers[2]["audio"].cross
    inputs, labels = batch(TOKENS, n=8)
    _, steps = engine_step(model, "sum", inputs, labels)
    reach = {s.group: s.losses for s in steps}
    assert reach["layer0.audio"] == ("multimodal", "audio", "image")


def brute_force_grads(model, inputs, labels, name):
    """Each group's update by separate full backward passes, integrated with the flat (k, d) API."""
    losses = MultitaskLoss()(model(inputs), labels)
    expected = {}
    for group, params in model.parameter_groups().items():
        rows = []
        for loss in losses.values():
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            if all(g is None for g in grads):
                continue
            rows.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads, params, strict=False)
                    ]
                )
            )
        expected[group] = get_integrator(name)(torch.stack(rows), segments=[p.numel() for p in params]).update
    return expected


@pytest.mark.parametrize("name", sorted(INTEGRATORS))
def test_every_integrator_on_the_transformer_matches_separate_backward_passes(name):
    model = small_transformer(depth=2)
    inputs, labels = batch(TOKENS, n=8)
    expected = brute_force_grads(model, inputs, labels, name)
    engine_step(model, name, inputs, labels)
    for group, params in model.parameter_groups().items():
        got = torch.cat([p.grad.reshape(-1) for p in params])
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected[group], rtol=1e-4, atol=1e-6)


def test_transformer_detach_unimodal_keeps_unimodal_losses_off_the_trunk():
    model = small_transformer(depth=2)
    inputs, labels = batch(TOKENS, n=8)
    engine = GradientEngine(model, get_integrator("mmpareto"))
    features = model.encode(inputs)
    steps = engine.backward(features, MultitaskLoss(True)(model.classify(features, detach_unimodal=True), labels))
    assert steps == []  # every group is reached by the multimodal loss only
    assert all(s == ("multimodal",) for s in engine.plan.reach.values())


def test_transformer_on_frames_and_vectors():
    spec = DatasetSpec({"audio": (1, 32, 32), "visual": (2, 3, 32, 32), "meta": (7,)}, num_classes=5)
    model = CrossModalTransformer(spec, dim=16, depth=2, heads=2, patch_size=16)
    inputs, labels = batch(spec)
    _, steps = engine_step(model, "pcgrad", inputs, labels)
    assert {s.group: len(s.losses) for s in steps}["layer0.meta"] == 4


def test_transformer_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown modalities"):
        small_transformer(patches={"video": [2, 2]})
    with pytest.raises(ValueError, match="divisible by heads"):
        small_transformer(dim=30, heads=4)
