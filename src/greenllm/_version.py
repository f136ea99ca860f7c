"""The one version source of greenllm (pyproject.toml reads it)."""

__version__ = "0.2.0"
