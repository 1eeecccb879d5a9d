"""Benchmarks that print figures (not tests); see ``bench/README.md``.

The scripts import each other by their plain names (``import _common``), as
they do when run as ``python bench/<script>.py``; importing them as
``bench.<script>`` puts this folder on ``sys.path`` for the same effect.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
