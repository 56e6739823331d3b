"""`python -m model_collapse`: the `collapse` command."""

import sys

from .cli import main

sys.exit(main())
