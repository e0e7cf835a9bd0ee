"""``python -m framework.tracking replay SPOOL... [--tracking-uri URI]``: see :mod:`framework.tracking.cli`."""

from .cli import cli

if __name__ == "__main__":
    raise SystemExit(cli())
