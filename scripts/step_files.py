"""Which files of ``framework/`` one training step runs, in the order it first enters them.

    .venv/bin/python scripts/step_files.py [method=mmpareto] [more overrides]

Builds the trainer as ``python -m framework.main`` does (``experiment=smoke`` plus the overrides),
takes one step (it plans), then traces a second one with ``sys.setprofile``. Each file is listed
with the first function entered there, and marked ``update`` when it is on the way from the
trainer to the parameters' update, ``forward`` for the model and the losses, ``hooks`` for the
method's hooks and the statistics. The last line counts the files a reader follows from
``framework/main.py`` to the update: main.py and the ``update`` files.
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


def main(overrides: list[str]) -> None:
    if not any(o.startswith("method=") for o in overrides):
        overrides = ["method=mmpareto", *overrides]
    with initialize_config_dir(config_dir=str(ROOT / "conf")):
        cfg = compose("train", overrides=["experiment=smoke", "trainer.statistics.noise_every=0", *overrides])
    trainer = entry.build_trainer(cfg, None, None)
    inputs, labels = next(iter(trainer._source(trainer.splits.train, train=True)))
    trainer.train_step(inputs, labels)  # the first step plans
    first: dict[str, str] = {}

    def profile(frame, event, arg):  # noqa: ANN001, ANN202 - sys.setprofile's signature
        name = frame.f_code.co_filename
        if event == "call" and name.startswith(PACKAGE):
            first.setdefault(name.removeprefix(PACKAGE), frame.f_code.co_name)

    sys.setprofile(profile)
    trainer.train_step(inputs, labels)
    sys.setprofile(None)
    for path, function in first.items():
        print(f"{kind(path):8s} {path:40s} {function}")
    update = [p for p in first if kind(p) == "update"]
    print(f"{cfg.method.name if cfg.method.name != 'none' else cfg.integrator.name}: "
          f"main.py and {len(update)} files to the update ({len(update) + 1} in all)")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
