"""Which files of ``framework/`` one training step runs, in the order it first enters them.

    .venv/bin/python scripts/step_files.py [method=mmpareto] [more overrides]

Builds the trainer as ``python -m framework.main`` does (``experiment=smoke`` plus the overrides),
takes one step (it plans), then traces a second one with ``sys.setprofile``. Each file is listed
with the first function entered there, and marked ``update`` when it is on the way from the
trainer to the parameters' update, ``forward`` for the model and the losses, ``hooks`` for the
method's hooks and the statistics, with the chain of files by which a reader reaches it from the
trainer (each file the caller of the next). The last lines count the files from ``framework/main.py``
to the update: all the ``update`` files the step enters, and the longest chain a reader follows
(main.py, then the trainer, the engine, the integrator and so on, down to the deepest file).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

import framework.main as entry

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = str(ROOT / "framework") + "/"
FORWARD = ("models/", "losses.py")
HOOKS = ("methods/", "training/statistics.py", "metric_names.py")


def kind(path: str) -> str:
    if path.startswith(FORWARD):
        return "forward"
    return "hooks" if path.startswith(HOOKS) else "update"


def trace(overrides: list[str]) -> tuple[str, dict[str, str], dict[str, tuple[str, ...]]]:
    """The label of the run, ``{file: first function entered}`` in order, and ``{file: chain}``."""
    if not any(o.startswith("method=") for o in overrides):
        overrides = ["method=mmpareto", *overrides]
    with initialize_config_dir(config_dir=str(ROOT / "conf")):
        cfg = compose("train", overrides=["experiment=smoke", "trainer.statistics.noise_every=0", *overrides])
    trainer = entry.build_trainer(cfg, None, None)
    inputs, labels = next(iter(trainer._source(trainer.splits.train, train=True)))
    trainer.train_step(inputs, labels)  # the first step plans
    first: dict[str, str] = {}
    chains: dict[str, tuple[str, ...]] = {}  # the shortest chain of callers' files reaching each file

    def profile(frame, event, arg):  # noqa: ANN001, ANN202 - sys.setprofile's signature
        name = frame.f_code.co_filename
        if event != "call" or not name.startswith(PACKAGE):
            return
        path = name.removeprefix(PACKAGE)
        first.setdefault(path, frame.f_code.co_name)
        chain: list[str] = []
        while frame is not None:
            file = frame.f_code.co_filename
            if file.startswith(PACKAGE) and file.removeprefix(PACKAGE) not in chain:
                chain.append(file.removeprefix(PACKAGE))
            frame = frame.f_back
        chain.reverse()
        if path not in chains or len(chain) < len(chains[path]):
            chains[path] = tuple(chain)

    sys.setprofile(profile)
    trainer.train_step(inputs, labels)
    sys.setprofile(None)
    return (cfg.method.name if cfg.method.name != "none" else cfg.integrator.name), first, chains


def deepest_chain(first: dict[str, str], chains: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The longest of the chains from the trainer to the ``update`` files."""
    return max((chains[p] for p in first if kind(p) == "update"), key=len)


def main(overrides: list[str]) -> None:
    label, first, chains = trace(overrides)
    for path, function in first.items():
        print(f"{kind(path):8s} {path:34s} {function:40s} {' > '.join(chains[path])}")
    update = [p for p in first if kind(p) == "update"]
    deepest = deepest_chain(first, chains)
    print(f"{label}: main.py and {len(update)} files to the update ({len(update) + 1} in all)")
    print(f"{label}: the longest chain from main.py is {len(deepest) + 1} files: main.py > {' > '.join(deepest)}")


if __name__ == "__main__":
    main(sys.argv[1:])
