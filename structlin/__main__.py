"""``python -m structlin``: the same as the ``structlin`` command."""

import sys

from .cli import main

sys.exit(main())
