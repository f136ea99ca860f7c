"""What the benchmark scripts share: where the real evaluation data is (``../shared/data``
beside the repo) and the ``--threads`` option.

Benchmarks run as scripts (``python benchmarks/NAME.py``), so this folder is on ``sys.path``
and they import from it with ``from _shared import ...``. Nothing here is copied into the
project; a benchmark whose file is absent says so and falls back or stops.
"""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WIKITEXT_TEST = SHARED_DATA / "wikitext" / "wiki.test.raw"


def add_threads_option(ap) -> None:
    """``--threads N``: torch intra-op threads for the benchmark (default: torch's choice)."""
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for this benchmark (default: torch's choice); 1 avoids "
        "spin-wait waste on a machine shared with other jobs",
    )


def apply_threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def decode_workload(prompts: int, tokens: int, threads: int | None):
    """The benchmarks' decode workload: the first ``prompts`` built-in prompts, ``tokens`` new
    tokens each, one warm-up batch, one repeat per call (the scripts interleave rounds)."""
    from greenllm.bench import Workload

    return Workload(
        prompts="builtin:prompts",
        limit=prompts,
        max_new_tokens=tokens,
        warmup=1,
        repeats=1,
        threads=threads,
    )
