"""MMPareto in a plain PyTorch loop of your own: no trainer, no ``parameter_groups()``.

python examples/plain_pytorch.py
"""

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy

import framework

SIZES = {"audio": 20, "visual": 30, "text": 10}


class Net(nn.Module):
    def __init__(self, modalities: tuple[str, ...] = ("audio", "visual"), classes: int = 4) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(SIZES[m], 32), nn.ReLU()) for m in modalities})
        self.fusion = nn.Linear(32, classes)
        self.heads = nn.ModuleDict({m: nn.Linear(32, classes) for m in modalities})

    def forward(self, inputs: dict[str, Tensor], y: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        features = {m: self.encoders[m](x) for m, x in inputs.items()}  # any subset of the modalities
        losses = {"multimodal": cross_entropy(self.fusion(sum(features.values())), y)}
        losses.update({m: cross_entropy(self.heads[m](f), y) for m, f in features.items()})
        return features, losses


def main(modalities: tuple[str, ...] = ("audio", "visual"), steps: int = 200, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    model, centres = Net(modalities), {m: torch.randn(4, SIZES[m]) for m in modalities}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(steps):
        y = torch.randint(0, 4, (64,))
        inputs = {m: c[y] + 2.0 * torch.randn(64, SIZES[m]) for m, c in centres.items()}
        features, losses = model(inputs, y)
        optimizer.zero_grad()
        decisions = framework.backward(losses, dict(model.encoders.items()), "mmpareto", features)
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            cosines = {g: round(float(d.decision.cosine[0, 1]), 3) for g, d in decisions.items()}
            print(f"step {step:3d}  loss {losses['multimodal'].item():.3f}  cos(multimodal, unimodal) {cosines}")
    y = torch.randint(0, 4, (1000,))
    with torch.no_grad():
        features, _ = model({m: c[y] + 2.0 * torch.randn(1000, SIZES[m]) for m, c in centres.items()}, y)
        accuracy = (model.fusion(sum(features.values())).argmax(1) == y).float().mean().item()
    print(f"test accuracy (fusion head): {accuracy:.3f}")
    return model


if __name__ == "__main__":
    main()
