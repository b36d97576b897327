"""``python -m semiseg3d`` runs the command-line entry point."""

import sys

from semiseg3d.cli import main

sys.exit(main())
