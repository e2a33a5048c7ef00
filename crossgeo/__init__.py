"""crossgeo: pixel-exact image/mask patches for segmentation training.

The core (this package's top level) needs rasterio, numpy, geopandas/pyogrio, pyarrow
and attrs, and imports neither torch nor tensorflow; the framework adapters live in
``crossgeo.torch``, ``crossgeo.tensorflow`` and ``crossgeo.keras``.
"""

from crossgeo.errors import ConfigError, CrossgeoError, OptionError, RasterError, ReadError, WindowError
from crossgeo.grid import Grid
from crossgeo.planning import (
    balanced_windows,
    class_fractions,
    grid_windows,
    random_windows,
    spatial_split,
    window_weights,
)
from crossgeo.sampler import Patch, PatchSampler
from crossgeo.windows import WindowIndex, WindowReport

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CrossgeoError",
    "Grid",
    "OptionError",
    "Patch",
    "PatchSampler",
    "RasterError",
    "ReadError",
    "WindowError",
    "WindowIndex",
    "WindowReport",
    "__version__",
    "balanced_windows",
    "class_fractions",
    "grid_windows",
    "random_windows",
    "spatial_split",
    "window_weights",
]
