"""On CUDA: each integrator gives the same update as on the CPU for the same (k, d) matrix
(float32, within 1e-5 relative norm). ``pytest -m cuda``."""

from __future__ import annotations

import pytest
import torch

from framework.integrators import get_integrator

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

INTEGRATORS = ("sum", "mgda", "mmpareto", "pcgrad", "upgrad", "cagrad", "nash_mtl")
RELATIVE = 1e-5


def update(name: str, matrix: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)  # integrators that draw (pcgrad's order) draw alike on both devices
    return get_integrator(name)(matrix).update


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", INTEGRATORS)
def test_integrator_on_cuda_matches_cpu(name, k):
    generator = torch.Generator().manual_seed(k)
    matrix = torch.randn(k, 4096, generator=generator)
    matrix[1] -= 0.8 * matrix[0]  # a conflict, so the non-trivial branches run
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 products, as on the CPU
    try:
        cpu = update(name, matrix)
        try:
            gpu = update(name, matrix.cuda())
        except (RuntimeError, TypeError, ValueError) as error:  # a CPU-only solver that refuses CUDA input
            pytest.skip(f"{name} refuses CUDA input: {error}")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32 and gpu.shape == cpu.shape
    error = (gpu.cpu() - cpu).norm() / cpu.norm().clamp_min(1e-12)
    assert error <= RELATIVE, f"{name}: relative difference {error:.2e}"
