"""PyInstaller's entry script for the bundled helper: exactly what the ``gocacheprog`` console script runs."""

from __future__ import annotations

import sys

from cacheprog.cli import main

sys.exit(main())
