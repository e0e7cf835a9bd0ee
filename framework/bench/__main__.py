"""``python -m framework.bench``: see :mod:`framework.bench.cli`."""

from .cli import main

if __name__ == "__main__":
    main()
