"""``python -m framework.data.prepare``: see :mod:`framework.data.prepare`."""

import sys

from framework.data.prepare import main

sys.exit(main())
