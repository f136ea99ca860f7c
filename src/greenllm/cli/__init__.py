"""The ``greenllm`` command. It only parses arguments and calls the API.

One module per command family registers its commands on ``app``. ``main()`` turns every
GreenLLMError into one line on stderr and exit code 2, with no traceback. No torch here.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from ..errors import GreenLLMError

MAX_ERROR_CHARS = 500


def one_line(msg: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error message as one line of at most ``limit`` characters, whatever it echoes."""
    flat = " ".join(msg.split()) or "error"
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


app = typer.Typer(
    name="greenllm",
    help="Compress language models and measure what it saved: energy, carbon, accuracy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines register(app). Adding a command family = adding a name here.
_COMMAND_MODULES = (
    "measure",
    "compress",
    "evaluate",
    "bench",
    "control",
    "run",
    "train",
    "recipes",
    "export",
    "compare",
)


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # command family not built yet
            raise
        mod.register(app)


@app.callback()
def _root() -> None:
    """Compress language models and measure what it saved: energy, carbon, accuracy."""


@app.command("version")
def version() -> None:
    """Print the greenllm version."""
    from .. import __version__

    typer.echo(__version__)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit 0 / the command's code, 2 with one line on user errors."""
    # greenllm prints its own progress; transformers' per-load weight bars only clutter the
    # output (transformers reads this when first imported, which the commands do lazily)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        rv = app(args=argv, standalone_mode=False)
    except GreenLLMError as exc:
        print(f"greenllm: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # typer.Exit / passthrough exit codes
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except KeyboardInterrupt:
        print("greenllm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # click usage errors arrive here with standalone_mode=False
        # typer may vendor click (typer._click); match the ClickException interface by shape.
        exit_code = getattr(exc, "exit_code", None)
        if hasattr(exc, "show") and isinstance(exit_code, int):
            fmt = getattr(exc, "format_message", None)
            if exit_code == 2 and callable(fmt):  # a usage error: one line, as ours
                ctx = getattr(exc, "ctx", None)
                where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
                print(f"greenllm: error: {one_line(fmt())}{where}", file=sys.stderr)
                return 2
            exc.show()
            return exit_code
        if type(exc).__name__ == "Abort":
            print("greenllm: aborted", file=sys.stderr)
            return 1
        raise
    return rv if isinstance(rv, int) else 0


def _entry() -> None:  # pragma: no cover
    sys.exit(main())
