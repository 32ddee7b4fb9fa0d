"""The bench scripts import their shared helpers (bench/benchlib.py) as a script run from bench/ would."""

import sys
from pathlib import Path

BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
