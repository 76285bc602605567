"""`python -m pipeline.emulator`: run the emulator on its own."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
