"""On CUDA: one step of the public API (:class:`framework.IntegratedBackward`) under bf16 autocast
gives the float32 ``.grad`` within 1e-1 relative norm (BatchNorm on 32 samples amplifies the rounding); under fp16 with a ``GradScaler`` no
gradient is NaN, the step is taken and the scaler's state is sane. ``pytest -m cuda``."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

BF16_RELATIVE = 1e-1  # bfloat16 keeps 8 mantissa bits (eps 7.8e-3); CPU autocast measures 0.043-0.052 here
FP16_RELATIVE = 2e-2  # float16 keeps 11 (eps 9.8e-4); CPU autocast measures 0.004-0.005


def one_step(device: str, precision: str, integrator: str) -> tuple[torch.Tensor, torch.nn.Module, object]:
    """``.grad`` of every parameter (flat, float32, unscaled) after one step, the model and the scaler."""
    from framework.bench.cases import build_model, make_batch, model_case
    from framework.integrated_backward import IntegratedBackward
    from framework.losses import MultitaskLoss

    case = model_case("cnn_cgmnist", quick=True)
    model = build_model(case).to(device).train()
    inputs, labels = make_batch(case, 32)
    inputs, labels = {m: t.to(device) for m, t in inputs.items()}, labels.to(device)
    scaler = torch.amp.GradScaler(torch.device(device).type) if precision == "16" else None
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision)
    groups = model.parameter_groups()
    backward = IntegratedBackward(groups, integrator, scaler)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None):
        losses = MultitaskLoss()(model(inputs), labels)
    backward(losses)
    if scaler is not None:
        scaler.unscale_(optimizer)
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return grads, model, scaler


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("integrator", ["sum", "upgrad"])
def test_bf16_autocast_step_matches_float32(integrator):
    want, _, _ = one_step("cuda", "32", integrator)
    got, model, _ = one_step("cuda", "bf16", integrator)
    assert torch.isfinite(got).all()
    assert all(p.dtype == torch.float32 for p in model.parameters()), "autocast keeps float32 parameters"
    assert relative(got, want) <= BF16_RELATIVE, f"bf16 vs float32 .grad: {relative(got, want):.2e}"


@pytest.mark.parametrize("integrator", ["sum", "mmpareto"])
def test_fp16_with_grad_scaler_steps_without_nan(integrator):
    want, _, _ = one_step("cuda", "32", integrator)
    got, model, scaler = one_step("cuda", "16", integrator)
    assert torch.isfinite(got).all(), "no NaN or inf in the unscaled gradients"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    state = scaler.state_dict()
    assert state["scale"] == 65536.0, "no overflow: the scale did not back off (and grows only after 2000 steps)"
    assert state["_growth_tracker"] == 1, "the step counted as a good one"
    assert relative(got, want) <= FP16_RELATIVE, f"fp16 vs float32 .grad: {relative(got, want):.2e}"
