"""crossgeo: pixel-exact image/mask patches for segmentation training.

The core (this package's top level) needs rasterio, numpy, geopandas/pyogrio, pyarrow
and attrs, and imports neither torch nor tensorflow; the framework adapters live in
``crossgeo.torch``, ``crossgeo.tensorflow`` and ``crossgeo.keras``.

Names are loaded on first use (PEP 562), so ``import crossgeo`` is cheap and importing
a pure module such as ``crossgeo.options`` or ``crossgeo.augment`` does not load rasterio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CatalogueError": "crossgeo.errors",
    "ClassRangeError": "crossgeo.errors",
    "ConfigError": "crossgeo.errors",
    "CrossgeoError": "crossgeo.errors",
    "LayerNotFoundError": "crossgeo.errors",
    "MissingAssetError": "crossgeo.errors",
    "NoOverlapError": "crossgeo.errors",
    "OptionError": "crossgeo.errors",
    "OptionTypeError": "crossgeo.errors",
    "RasterError": "crossgeo.errors",
    "ReadError": "crossgeo.errors",
    "WindowError": "crossgeo.errors",
    "WriteError": "crossgeo.errors",
    "ChipSampler": "crossgeo.chips",
    "write_chips": "crossgeo.chips",
    "Grid": "crossgeo.grid",
    "Patch": "crossgeo.sampler",
    "PatchSampler": "crossgeo.sampler",
    "SceneSampler": "crossgeo.scenes",
    "WindowIndex": "crossgeo.windows",
    "WindowReport": "crossgeo.windows",
    "Prediction": "crossgeo.predict",
    "Evaluation": "crossgeo.evaluation",
    "evaluate": "crossgeo.evaluation",
    "predict_raster": "crossgeo.predict",
    "balanced_windows": "crossgeo.planning",
    "class_fractions": "crossgeo.planning",
    "grid_windows": "crossgeo.planning",
    "plan_windows": "crossgeo.planning",
    "random_windows": "crossgeo.planning",
    "spatial_split": "crossgeo.planning",
    "window_weights": "crossgeo.planning",
    "WindowPlan": "crossgeo.planning",
    "stac_scenes": "crossgeo.stac",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:
    from crossgeo.chips import ChipSampler as ChipSampler
    from crossgeo.chips import write_chips as write_chips
    from crossgeo.errors import CatalogueError as CatalogueError
    from crossgeo.errors import ClassRangeError as ClassRangeError
    from crossgeo.errors import ConfigError as ConfigError
    from crossgeo.errors import CrossgeoError as CrossgeoError
    from crossgeo.errors import LayerNotFoundError as LayerNotFoundError
    from crossgeo.errors import MissingAssetError as MissingAssetError
    from crossgeo.errors import NoOverlapError as NoOverlapError
    from crossgeo.errors import OptionError as OptionError
    from crossgeo.errors import OptionTypeError as OptionTypeError
    from crossgeo.errors import RasterError as RasterError
    from crossgeo.errors import ReadError as ReadError
    from crossgeo.errors import WindowError as WindowError
    from crossgeo.errors import WriteError as WriteError
    from crossgeo.evaluation import Evaluation as Evaluation
    from crossgeo.evaluation import evaluate as evaluate
    from crossgeo.grid import Grid as Grid
    from crossgeo.planning import WindowPlan as WindowPlan
    from crossgeo.planning import balanced_windows as balanced_windows
    from crossgeo.planning import class_fractions as class_fractions
    from crossgeo.planning import grid_windows as grid_windows
    from crossgeo.planning import plan_windows as plan_windows
    from crossgeo.planning import random_windows as random_windows
    from crossgeo.planning import spatial_split as spatial_split
    from crossgeo.planning import window_weights as window_weights
    from crossgeo.predict import Prediction as Prediction
    from crossgeo.predict import predict_raster as predict_raster
    from crossgeo.sampler import Patch as Patch
    from crossgeo.sampler import PatchSampler as PatchSampler
    from crossgeo.scenes import SceneSampler as SceneSampler
    from crossgeo.stac import stac_scenes as stac_scenes
    from crossgeo.windows import WindowIndex as WindowIndex
    from crossgeo.windows import WindowReport as WindowReport


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crossgeo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
