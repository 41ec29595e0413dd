"""``python -m torchckpt``: the command line (see :mod:`torchckpt.cli`)."""

import sys

from .cli import main

sys.exit(main())
