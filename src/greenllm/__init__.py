"""greenllm: compress language models and prove what it saved (energy, carbon, accuracy).

The public API is listed in ``__all__``. Names are imported lazily so that
``import greenllm`` stays light (no torch) on a bare Jetson or a measuring host.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._logging import quiet_third_party
from .errors import GreenLLMError

quiet_third_party()

from ._version import __version__

_LAZY = {
    # compression
    "compress": "greenllm.steps.base:compress",
    "load_model": "greenllm.models:load_model",
    "save": "greenllm.models:save",
    "offline_model_dir": "greenllm.models:offline_model_dir",
    # typed step configs: frozen, validated on construction; the type selects the step
    "Quantize": "greenllm.steps.quantize:QuantizeConfig",
    "Prune": "greenllm.steps.prune:PruneConfig",
    "Calibration": "greenllm.steps.prune:CalibrationConfig",
    "Distill": "greenllm.steps.distill:DistillConfig",
    "Student": "greenllm.steps.distill:StudentConfig",
    "Lora": "greenllm.steps.lora:LoraConfig",
    "Train": "greenllm.steps.train:TrainConfig",
    "EarlyStopping": "greenllm.steps.train:EarlyStopping",
    "Export": "greenllm.steps.export:ExportConfig",
    # measurement
    "detect_meters": "greenllm.meters:detect_meters",
    "capped": "greenllm.control.base:capped",
    "grid_intensity": "greenllm.carbon:grid_intensity",
    "emissions_g": "greenllm.carbon:emissions_g",
    # evaluation and benchmarks
    "evaluate": "greenllm.evals:evaluate",
    # recipes, runner, reports
    "load_recipe": "greenllm.recipe:load_recipe",
    "recipes_dir": "greenllm.recipe_files:recipes_dir",
    "run": "greenllm.runner:run",
    "write_report": "greenllm.report.build:write_report",
    # records
    "EnergyReport": "greenllm.results:EnergyReport",
    "StepResult": "greenllm.results:StepResult",
    "EvalResult": "greenllm.results:EvalResult",
    "BenchResult": "greenllm.results:BenchResult",
}

# ``measure`` and ``bench`` are both submodules and public functions. Importing a submodule
# sets the package attribute to the module, so the functions are bound eagerly here, after
# their modules load (neither imports torch), and stay bound for any later import.
from .bench import bench  # noqa: E402
from .measure import measure  # noqa: E402

__all__ = ["GreenLLMError", "__version__", "bench", "measure", *_LAZY]


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'greenllm' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from .carbon import emissions_g, grid_intensity
    from .control.base import capped
    from .evals import evaluate
    from .meters import detect_meters
    from .models import load_model, offline_model_dir, save
    from .recipe import load_recipe
    from .recipe_files import recipes_dir
    from .report.build import write_report
    from .results import BenchResult, EnergyReport, EvalResult, StepResult
    from .runner import run
    from .steps.base import compress
    from .steps.distill import DistillConfig as Distill
    from .steps.distill import StudentConfig as Student
    from .steps.export import ExportConfig as Export
    from .steps.lora import LoraConfig as Lora
    from .steps.prune import CalibrationConfig as Calibration
    from .steps.prune import PruneConfig as Prune
    from .steps.quantize import QuantizeConfig as Quantize
    from .steps.train import EarlyStopping
    from .steps.train import TrainConfig as Train
