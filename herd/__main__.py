"""`python -m herd` runs the CLI."""

import sys

from herd.cli import main

sys.exit(main())
