"""MLflow maintenance from the shell: ``python -m framework.tracking replay SPOOL... [--tracking-uri URI]``
sends runs' spools (``mlflow_spool/<run id>.jsonl``) into a store (:func:`~framework.tracking.journal.replay`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .journal import read_spool, replay


def cli(argv: list[str] | None = None) -> int:
    """``python -m framework.tracking replay SPOOL... [--tracking-uri URI]``."""
    parser = argparse.ArgumentParser(prog="python -m framework.tracking", description="MLflow maintenance")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("replay", help="send runs' spools (mlflow_spool/<run id>.jsonl) into a store")
    command.add_argument("spool", nargs="+", type=Path, help="journals; those of one run are merged")
    command.add_argument(
        "--tracking-uri", default=None, help="the store (default: the run's own, as its spool records)"
    )
    command.add_argument("--keep", action="store_true", help="keep each spool after it was replayed")
    args = parser.parse_args(argv)
    runs: dict[str, list[str | Path]] = {}  # the journals of one run are replayed together, each point once
    for path in args.spool:
        runs.setdefault(str(read_spool(path).run.get("run_id")), []).append(path)
    for paths in runs.values():
        summary = replay(paths, args.tracking_uri)
        print(json.dumps({"spool": ", ".join(map(str, paths)), **summary}))
        if not args.keep:
            for path in paths:
                Path(path).unlink()
    return 0
