"""Where the benchmarks find the real evaluation data: ``../shared/data`` beside the repo.

Benchmarks run as scripts (``python benchmarks/NAME.py``), so this folder is on ``sys.path``
and they import these paths with ``from _shared import ...``. Nothing here is copied into the
project; a benchmark whose file is absent says so and falls back or stops.
"""
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WIKITEXT_TEST = SHARED_DATA / "wikitext" / "wiki.test.raw"
