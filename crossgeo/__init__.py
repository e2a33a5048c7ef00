"""crossgeo: pixel-exact image/mask patches for segmentation training.

The core (this package's top level) needs rasterio, numpy, geopandas/pyogrio, pyarrow
and attrs, and imports neither torch nor tensorflow; the framework adapters live in
``crossgeo.torch``, ``crossgeo.tensorflow`` and ``crossgeo.keras``.
"""

from crossgeo.errors import ConfigError, CrossgeoError, OptionError, RasterError, ReadError, WindowError
from crossgeo.grid import Grid
from crossgeo.predict import Prediction, evaluate, predict_raster
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
    "Prediction",
    "RasterError",
    "ReadError",
    "WindowError",
    "WindowIndex",
    "WindowReport",
    "__version__",
    "evaluate",
    "predict_raster",
]
