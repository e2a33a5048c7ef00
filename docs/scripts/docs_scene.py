"""Write the folder every example of the documentation runs in.

    python docs/scripts/docs_scene.py DOCS_SCENE_DIR

The examples on the documentation pages use plain relative paths (``imagery.mbtiles``,
``masks/mask.vrt``, ``crops/windows.csv``, ...; the README's, ``crossgeo-demo/...``). The documentation tests
(``tests/*/test_*docs.py``) write this folder once, copy it for each page and run the page's
code blocks inside it. The rasters come from :func:`crossgeo.demo.write_demo_scene` (the
scene of ``crossgeo demo``: a synthetic landscape written by GDAL as GeoTIFF and MBTiles,
with a colour-coded mask in EPSG:4326 at another resolution); when the real third-party
rasters of ``../shared/data/real`` are present they are linked as ``real/``.

Files::

    imagery.tif            RGB uint8 GeoTIFF, EPSG:3857, 1024 x 1024 pixels of ~4.8 m
    imagery.mbtiles        the same pixels as MBTiles (zoom 15, PNG tiles: reads as RGBA)
    masks/mask.tif         RGB colour-coded mask, EPSG:4326, 1524 x 1032 pixels of 0.00003 deg
    masks/west.tif         the western half of masks/mask.tif ...
    masks/east.tif         ... and the eastern half
    masks/mask.vrt         a VRT mosaic of the two halves (what gdalbuildvrt writes)
    masks/landcover.tif    single-band class indices 0..3 (uint8, EPSG:4326, nodata 255 over
                           the northernmost 10 % of its rows: "not surveyed")
    crops/windows.csv      16 windows, row_off/col_off on a 256-pixel grid
    crops/regions.gpkg     25 points (EPSG:4326) in the layer "training_windows"; one lies
                           outside the image, a few near its edges
    config.yaml            a Hydra config in the original's format, _target_ switched to crossgeo
    crossgeo-demo/         what `crossgeo demo` writes (image.tif, image.mbtiles, mask.tif,
                           windows.csv, windows.gpkg, config.yaml, ...): the README's example
                           reads it, as a user's would after running the demo
    real/                  ../shared/data/real (RGB.byte.tif, world.byte.tif, box.shp, ...)
                           when it exists

Colours of the mask: water (0, 0, 255) -> 1, forest (0, 255, 0) -> 2, building (255, 0, 0)
-> 3; everything else (black) is background, class 0.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from crossgeo import testing
from crossgeo.demo import write_demo_scene

COLOR_MAP = [[0, 0, 255, 1], [0, 255, 0, 2], [255, 0, 0, 3]]
#: Offsets of the 16 CSV windows.
GRID = (0, 256, 512, 768)
#: Where the real third-party rasters are (the tests' location; CROSSGEO_REAL_DATA overrides).
REAL_DATA = Path(
    os.environ.get("CROSSGEO_REAL_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
)

CONFIG = """\
train_dataset:
  _target_: crossgeo.torch.MBTilesCropsGeoTifMaskDataset
  image_mbtiles_path: imagery.mbtiles
  mask_path: masks/mask.vrt
  crops_path: crops/windows.csv
  patch_size: 256
  selected_bands: [1, 2, 3]
  color_map:
    - [0, 0, 255, 1]
    - [0, 255, 0, 2]
    - [255, 0, 0, 3]
  data_loader:
    shuffle: true
    num_workers: 0
"""


def write_docs_scene(folder: str | os.PathLike[str]) -> Path:
    """Write the documentation's example folder (see the module docstring) and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    demo = write_demo_scene(folder / "crossgeo-demo", with_augmentation=False)
    (folder / "masks").mkdir(exist_ok=True)
    (folder / "crops").mkdir(exist_ok=True)
    shutil.copyfile(demo["image"], folder / "imagery.tif")
    shutil.copyfile(demo["mbtiles"], folder / "imagery.mbtiles")
    shutil.copyfile(demo["mask"], folder / "masks" / "mask.tif")
    shutil.copyfile(demo["windows_gpkg"], folder / "crops" / "regions.gpkg")

    with rasterio.open(demo["mask"]) as src:
        data = src.read()
        half = src.width // 2
        for name, col0, part in (("west.tif", 0, data[:, :, :half]), ("east.tif", half, data[:, :, half:])):
            testing.write_raster(
                folder / "masks" / name, part, crs=src.crs, transform=src.transform @ Affine.translation(col0, 0)
            )
        testing.write_vrt_mosaic(
            folder / "masks" / "mask.vrt", [folder / "masks" / "west.tif", folder / "masks" / "east.tif"]
        )
        classes = np.zeros(data.shape[1:], dtype=np.uint8)
        for r, g, b, cls in COLOR_MAP:
            classes[(data[0] == r) & (data[1] == g) & (data[2] == b)] = cls
        classes[: data.shape[1] // 10] = 255
        testing.write_raster(
            folder / "masks" / "landcover.tif", classes[None], crs=src.crs, transform=src.transform, nodata=255
        )

    rows, cols = np.meshgrid(GRID, GRID, indexing="ij")
    testing.write_windows_table(folder / "crops" / "windows.csv", rows.ravel().tolist(), cols.ravel().tolist())
    (folder / "config.yaml").write_text(CONFIG)
    if (REAL_DATA / "RGB.byte.tif").exists() and not (folder / "real").exists():
        (folder / "real").symlink_to(REAL_DATA.resolve(), target_is_directory=True)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    print(write_docs_scene(sys.argv[1]))
