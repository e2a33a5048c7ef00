"""Synthetic rasters with known ground truth, for tests, the demo and benchmarks.

The images encode their own pixel coordinates (odc-geo's test idea), so a patch proves
*where* it was read from; the masks are a known function of longitude/latitude, so an
aligned mask can be checked against the geography, not against crossgeo itself.
Every file is written by rasterio/GDAL.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.warp import transform as warp_transform

WEB_MERCATOR_HALF = 20037508.342789244
"""Half the Web Mercator world width in metres."""
TILE = 256


def coordinate_bands(height: int, width: int, dtype: str = "uint16", row0: int = 0, col0: int = 0) -> np.ndarray:
    """(3, H, W) values encoding each pixel's (row, col); see `decode_coordinates`.

    uint16 (and wider): band 1 = row, band 2 = col, band 3 = row + col (mod 2**16).
    uint8: band 1 = col % 256, band 2 = row % 256, band 3 = 16 * (row // 256) + col // 256
    (unique up to 4096 x 4096).
    """
    rows, cols = np.mgrid[row0 : row0 + height, col0 : col0 + width]
    if np.dtype(dtype) == np.uint8:
        bands = [cols % 256, rows % 256, 16 * (rows // 256) + cols // 256]
    else:
        bands = [rows, cols, (rows + cols) % 65536]
    return np.stack(bands).astype(dtype)


def decode_coordinates(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) encoded by `coordinate_bands` in a (>=3, H, W) image."""
    if image.dtype == np.uint8:
        high = image[2].astype(np.int64)
        return (high // 16) * 256 + image[1], (high % 16) * 256 + image[0]
    return image[0].astype(np.int64), image[1].astype(np.int64)


def write_raster(
    path: str | os.PathLike[str],
    data: np.ndarray,
    *,
    crs: Any,
    transform: Affine,
    nodata: float | None = None,
    tiled: bool = True,
    blocksize: int = 256,
    colorinterp: Sequence[ColorInterp] | None = None,
    **profile: Any,
) -> Path:
    """Write a (bands, H, W) array as a GeoTIFF (tiled or striped)."""
    path = Path(path)
    count, height, width = data.shape
    options: dict[str, Any] = {"compress": "deflate"}
    if tiled and height >= 16 and width >= 16:
        size = max(16, min(blocksize, 16 * (min(height, width) // 16)))
        options.update(tiled=True, blockxsize=size, blockysize=size)
    options.update(profile)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=count,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        **options,
    ) as dst:
        dst.write(data)
        if colorinterp is not None:
            dst.colorinterp = list(colorinterp)
    return path


def web_mercator_transform(zoom: int, tile_col: int, tile_row: int) -> Affine:
    """The transform of zoom ``zoom``'s pixel grid with origin at tile (col, row)'s corner."""
    res = 2 * WEB_MERCATOR_HALF / (TILE * 2**zoom)
    return Affine(
        res, 0, -WEB_MERCATOR_HALF + tile_col * TILE * res, 0, -res, WEB_MERCATOR_HALF - tile_row * TILE * res
    )


def write_mbtiles(tif_path: str | os.PathLike[str], mbtiles_path: str | os.PathLike[str], **options: Any) -> Path:
    """Copy a GeoTIFF on the Web Mercator tile grid (see `web_mercator_transform`) to MBTiles.

    GDAL's MBTiles driver writes PNG tiles by default; the result reads back as RGBA.
    """
    rasterio.shutil.copy(str(tif_path), str(mbtiles_path), driver="MBTiles", **options)
    return Path(mbtiles_path)


def lonlat_classes(lon: np.ndarray, lat: np.ndarray, cell: float, n_classes: int) -> np.ndarray:
    """The ground-truth class of a point: a lon/lat checkerboard of ``cell``-degree squares."""
    return ((np.floor(lon / cell) + 2 * np.floor(lat / cell)) % n_classes).astype(np.int64)


def write_lonlat_mask(
    path: str | os.PathLike[str],
    bounds: tuple[float, float, float, float],
    resolution: float,
    *,
    cell: float,
    n_classes: int,
    crs: Any = "EPSG:4326",
    nodata: float | None = None,
    palette: Sequence[Sequence[int]] | None = None,
) -> Path:
    """A mask in ``crs`` over ``bounds`` whose class is `lonlat_classes` of each pixel centre.

    With ``palette`` (a colour per class) it is written as an RGB colour-coded mask.
    """
    left, bottom, right, top = bounds
    width = round((right - left) / resolution)
    height = round((top - bottom) / resolution)
    transform = Affine(resolution, 0, left, 0, -resolution, top)
    rows, cols = np.mgrid[0:height, 0:width]
    xs, ys = transform @ (cols + 0.5, rows + 0.5)
    crs = CRS.from_user_input(crs)
    if crs != CRS.from_epsg(4326):
        lon, lat = warp_transform(crs, "EPSG:4326", xs.ravel(), ys.ravel())
        xs, ys = np.asarray(lon).reshape(xs.shape), np.asarray(lat).reshape(ys.shape)
    classes = lonlat_classes(xs, ys, cell, n_classes)
    if palette is None:
        data = classes.astype(np.uint8)[None]
    else:
        data = np.asarray(palette, dtype=np.uint8)[classes].transpose(2, 0, 1)
    return write_raster(path, data, crs=crs, transform=transform, nodata=nodata)


def write_windows_table(
    path: str | os.PathLike[str], row_off: Iterable[int], col_off: Iterable[int], **extra: Any
) -> Path:
    """Windows as CSV or Parquet (by suffix), columns ``row_off``, ``col_off`` (+ extras)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    table = pa.table({"row_off": list(row_off), "col_off": list(col_off), **{k: list(v) for k, v in extra.items()}})
    if path.suffix.lower() == ".parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)
    return path


def write_tiled_scene(
    folder: str | os.PathLike[str], size: int, windows: int, patch: int, classes: int, *, seed: int = 0
) -> tuple[Path, Path, Path]:
    """A UTM scene whose image (``image.tif``, uint8, 32^2 tiles: what `crossgeo.io.PlannedBlocks` keeps) encodes
    each pixel's (row, col) (`coordinate_bands`), its mask (``mask.tif``, on the same grid) the class
    ``row // 40 % classes``, and ``windows`` random ``patch``-sized windows inside it (``w.csv``)."""
    folder = Path(folder)
    transform = Affine(10, 0, 600000.0, 0, -10, 5600000.0)
    image = write_raster(
        folder / "image.tif", coordinate_bands(size, size, "uint8"), crs="EPSG:32632", transform=transform, blocksize=32
    )
    mask_classes = (coordinate_bands(size, size)[:1] // 40 % classes).astype("uint8")
    mask = write_raster(folder / "mask.tif", mask_classes, crs="EPSG:32632", transform=transform)
    rows, cols = np.random.default_rng(seed).integers(0, size - patch, (2, windows))
    return image, mask, write_windows_table(folder / "w.csv", rows.tolist(), cols.tolist())


def write_points(
    path: str | os.PathLike[str], xs: Sequence[float], ys: Sequence[float], *, crs: Any, layer: str | None = None
) -> Path:
    """Point features (any vector format pyogrio writes, by suffix)."""
    import geopandas as gpd

    frame = gpd.GeoDataFrame({"id": np.arange(len(xs))}, geometry=gpd.points_from_xy(xs, ys), crs=crs)
    frame.to_file(path, layer=layer, engine="pyogrio")
    return Path(path)


def write_vrt_mosaic(path: str | os.PathLike[str], sources: Sequence[str | os.PathLike[str]]) -> Path:
    """A VRT mosaicking rasters that share one pixel grid, as ``gdalbuildvrt`` writes it.

    The mosaic covers the union of the sources; each source is placed at its own offset and
    referenced relative to the VRT. Band count, data type and colour interpretation come from
    the first source (GDAL's command line tools are not needed).
    """
    import rasterio.dtypes

    path = Path(path)
    opened = [rasterio.open(source) for source in sources]
    try:
        first = opened[0]
        res_x, res_y = first.transform.a, first.transform.e
        left = min(src.transform.c for src in opened)
        top = max(src.transform.f for src in opened) if res_y < 0 else min(src.transform.f for src in opened)
        placed = [
            (src, round((src.transform.c - left) / res_x), round((src.transform.f - top) / res_y)) for src in opened
        ]
        width = max(col + src.width for src, col, _ in placed)
        height = max(row + src.height for src, _, row in placed)
        data_type = rasterio.dtypes._gdal_typename(first.dtypes[0])
        bands = []
        for band in range(1, first.count + 1):
            interp = first.colorinterp[band - 1].name.capitalize()
            simple = "".join(
                f'<SimpleSource><SourceFilename relativeToVRT="1">{os.path.relpath(src.name, path.parent)}'
                f"</SourceFilename><SourceBand>{band}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{src.width}" ySize="{src.height}"/>'
                f'<DstRect xOff="{col}" yOff="{row}" xSize="{src.width}" ySize="{src.height}"/></SimpleSource>\n'
                for src, col, row in placed
            )
            bands.append(
                f'<VRTRasterBand dataType="{data_type}" band="{band}"><ColorInterp>{interp}</ColorInterp>\n'
                f"{simple}</VRTRasterBand>"
            )
        transform = Affine(res_x, 0, left, 0, res_y, top)
        path.write_text(
            f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n<SRS>{first.crs.to_wkt()}</SRS>\n'
            f"<GeoTransform>{', '.join(repr(v) for v in transform.to_gdal())}</GeoTransform>\n"
            + "\n".join(bands)
            + "\n</VRTDataset>\n"
        )
    finally:
        for src in opened:
            src.close()
    return path


def corrupt_mbtiles_tile(mbtiles: str | os.PathLike[str], zoom: int) -> tuple[int, int]:
    """Replace one tile blob of ``zoom`` with a truncated PNG, as a damaged copy would hold.

    Returns the tile's (column, TMS row). GDAL then reports the tile as unreadable.
    """
    import sqlite3

    with sqlite3.connect(mbtiles) as db:
        column, row = db.execute(
            "SELECT tile_column, tile_row FROM tiles WHERE zoom_level = ? LIMIT 1", (zoom,)
        ).fetchone()
        db.execute(
            "UPDATE tiles SET tile_data = ? WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
            (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", zoom, column, row),
        )
    return int(column), int(row)


def write_damaged_mbtiles_scene(folder: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """(MBTiles image, aligned mask, windows CSV) where one of the image's four tiles is damaged.

    A 512-pixel coordinate-encoding image on the zoom-12 tile grid (2 x 2 tiles), a class
    mask on the same grid (stripes 64 rows high) and 32 windows of 64 pixels, a quarter of
    which touch the damaged tile: for testing ``on_read_error``.
    """
    folder = Path(folder)
    transform = web_mercator_transform(12, 2176, 1460)
    tif = write_raster(folder / "image.tif", coordinate_bands(512, 512, "uint8"), crs="EPSG:3857", transform=transform)
    mbtiles = write_mbtiles(tif, folder / "damaged.mbtiles")
    corrupt_mbtiles_tile(mbtiles, 12)
    classes = (np.arange(512)[None, :, None] // 64 % 2 * np.ones((1, 1, 512))).astype(np.uint8)
    mask = write_raster(folder / "mask.tif", classes, crs="EPSG:3857", transform=transform)
    rows, cols = np.meshgrid(np.arange(0, 512 - 64 + 1, 64), np.arange(0, 512 - 64 + 1, 128))
    windows = write_windows_table(folder / "windows.csv", rows.ravel(), cols.ravel())
    return mbtiles, mask, windows


def write_scene_cut(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    row_off: int,
    col_off: int,
    height: int,
    width: int,
    *,
    crs: Any = None,
) -> Path:
    """One scene cut from ``source``: its pixel block, or with ``crs`` that block warped there (nearest).

    A block keeps the source's pixels on a shifted transform, so a window of the scene is
    the source's window moved by (``row_off``, ``col_off``); a warped block holds the source
    pixels nearest to each of its pixel centres in ``crs`` (for catalogues of scenes).
    """
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import Resampling, calculate_default_transform
    from rasterio.windows import Window
    from rasterio.windows import bounds as window_bounds

    window = Window(col_off, row_off, width, height)
    with rasterio.open(source) as src:
        data = src.read(window=window)
        transform = src.window_transform(window)
        if crs is None:
            return write_raster(path, data, crs=src.crs, transform=transform, nodata=src.nodata)
        bounds = window_bounds(window, src.transform)
        dst_transform, dst_width, dst_height = calculate_default_transform(src.crs, crs, width, height, *bounds)
        with WarpedVRT(
            src,
            crs=crs,
            transform=dst_transform,
            width=dst_width,
            height=dst_height,
            resampling=Resampling.nearest,
            src_nodata=src.nodata if src.nodata is not None else 0,
            nodata=src.nodata if src.nodata is not None else 0,
        ) as vrt:
            data = vrt.read()
        return write_raster(path, data, crs=crs, transform=dst_transform, nodata=src.nodata)


def write_scene_catalogue(
    folder: str | os.PathLike[str],
    n_scenes: int,
    *,
    size: int = 128,
    windows: Sequence[tuple[int, int]] = ((0, 0),),
    cell: float = 0.01,
    n_classes: int = 4,
) -> tuple[list[dict[str, str]], Path]:
    """``n_scenes`` scenes side by side, cut from one uint8 coordinate raster (Web Mercator), and a mask.

    Returns the scenes (``image_path`` and a ``crops_path`` table of ``windows`` per scene) and
    a lon/lat class mask in EPSG:4326 over all of them (as one warped mosaic would be).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    transform = web_mercator_transform(12, 2176, 1460)
    full = write_raster(
        folder / "full.tif", coordinate_bands(size, size * n_scenes, "uint8"), crs="EPSG:3857", transform=transform
    )
    crops = write_windows_table(folder / "windows.csv", [r for r, _ in windows], [c for _, c in windows])
    scenes = [
        {
            "image_path": str(write_scene_cut(full, folder / f"scene{i:04d}.tif", 0, size * i, size, size)),
            "crops_path": str(crops),
        }
        for i in range(n_scenes)
    ]
    with rasterio.open(full) as src:
        from rasterio.warp import transform_bounds

        left, bottom, right, top = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    pad = 0.01
    mask = write_lonlat_mask(
        folder / "mask4326.tif",
        (left - pad, bottom - pad, right + pad, top + pad),
        (top - bottom) / size / 2,
        cell=cell,
        n_classes=n_classes,
    )
    return scenes, mask


PALETTE = ((0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255))
"""Colours of classes 0-3 for an RGB colour-coded `write_lonlat_mask` (``palette=PALETTE``)."""


def window_coordinates(row_off: int, col_off: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of every pixel of the ``size`` window at ``(row_off, col_off)``: what a patch of a
    `coordinate_bands` image decodes to (`decode_coordinates`)."""
    rows, cols = np.mgrid[row_off : row_off + size, col_off : col_off + size]
    return rows, cols


class CoordinateScene:
    """A coordinate-encoding image on a Web Mercator tile's pixel grid, and masks and windows beside it.

    ``image.tif`` (in ``folder``) holds `coordinate_bands` (``dtype``), so every patch proves
    where it was read from; masks are written on demand: `lonlat_mask` (a known function of
    longitude/latitude, in EPSG:4326 by default, so reading it warps) and `aligned_mask` (on
    the image grid itself); `windows` writes a windows table; `mbtiles` the image as MBTiles.
    The core, torch and tf test suites all build their scenes with it.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        size: int = 256,
        *,
        dtype: str = "uint8",
        zoom: int = 12,
        tile: tuple[int, int] = (2176, 1460),
    ) -> None:
        self.folder = Path(folder)
        self.size = size
        self.crs = "EPSG:3857"
        self.transform = web_mercator_transform(zoom, *tile)
        """The image grid: zoom ``zoom``'s pixels from tile ``(col, row)``'s top-left corner (near lon 11.25, lat
        45.8 by default)."""
        self.image = write_raster(
            self.folder / "image.tif", coordinate_bands(size, size, dtype), crs=self.crs, transform=self.transform
        )
        from rasterio.transform import array_bounds
        from rasterio.warp import transform_bounds

        bounds = array_bounds(size, size, self.transform)  # left, bottom, right, top
        self.lonlat_bounds: tuple[float, float, float, float] = transform_bounds(self.crs, "EPSG:4326", *bounds)
        self._mbtiles: Path | None = None

    def path(self, name: str) -> Path:
        """A file name in the scene's folder."""
        return self.folder / name

    @property
    def mbtiles(self) -> Path:
        """The image as MBTiles (``image.mbtiles``, GDAL's driver; written on first use)."""
        if self._mbtiles is None:
            self._mbtiles = write_mbtiles(self.image, self.folder / "image.mbtiles")
        return self._mbtiles

    def lonlat_mask(
        self,
        name: str = "mask4326.tif",
        *,
        margin: float = 0.05,
        resolution: float = 0.0003,
        cell: float = 0.01,
        n_classes: int = 4,
        **options: Any,
    ) -> Path:
        """`write_lonlat_mask` over the scene's lon/lat bounds plus ``margin`` degrees (``options``: ``crs``,
        ``nodata``, ``palette``); its classes are `lonlat_classes` of each pixel centre."""
        left, bottom, right, top = self.lonlat_bounds
        bounds = (left - margin, bottom - margin, right + margin, top + margin)
        return write_lonlat_mask(self.folder / name, bounds, resolution, cell=cell, n_classes=n_classes, **options)

    def aligned_mask(self, data: np.ndarray, name: str = "aligned.tif", *, pad: int = 0, **options: Any) -> Path:
        """``data`` (bands, H, W) written on the image grid, ``pad`` pixels larger on every side (``options``: as
        `write_raster`)."""
        transform = self.transform @ Affine.translation(-pad, -pad)
        return write_raster(self.folder / name, data, crs=self.crs, transform=transform, **options)

    def windows(self, rows: Iterable[int], cols: Iterable[int], name: str = "windows.csv", **extra: Any) -> Path:
        """A windows table (`write_windows_table`; CSV or Parquet by suffix) in the scene's folder."""
        return write_windows_table(self.folder / name, rows, cols, **extra)


STAC_SCALE, STAC_OFFSET, STAC_NODATA = 0.5, 10.0, 0
"""The raster-extension values of `write_stac_items`' ``elev`` asset: value = raw * 0.5 + 10, raw 0 is nodata."""


def write_stac_items(
    folder: str | os.PathLike[str],
    n_items: int = 2,
    *,
    size: int = 64,
    href_base: str | None = None,
    name: str = "items.json",
) -> Path:
    """A static STAC item collection of ``n_items`` scenes side by side: COG assets and the collection JSON.

    Item ``i`` (id ``scene-i``, datetime 2024-(i+1)-01, property ``tile`` = ``"T1"``) has three
    assets on one Web Mercator grid: ``coords`` (`coordinate_bands` uint16 of the whole strip,
    so columns continue from scene to scene: item i's col 0 holds ``i * size``), ``elev``
    (uint16 ``row + col``, ``raster:bands`` scale `STAC_SCALE`, offset `STAC_OFFSET`, nodata
    `STAC_NODATA`: the strip's pixel (0, 0)) and ``labels`` (uint8 classes ``(row // 8 + col // 8) % 2``).
    Hrefs are ``href_base/<file>`` (e.g. a loopback server's URL) or the files' absolute paths.
    Written with pystac; returns the collection file.
    """
    import datetime

    import pystac
    from shapely.geometry import box, mapping

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    transform = web_mercator_transform(12, 2176, 1460)
    items = []
    for i in range(n_items):
        grid = transform @ Affine.translation(i * size, 0)
        coords = coordinate_bands(size, size, "uint16", col0=i * size)
        rows, cols = np.mgrid[0:size, i * size : (i + 1) * size]
        elev = (rows + cols).astype(np.uint16)[None]
        labels = ((rows // 8 + cols // 8) % 2).astype(np.uint8)[None]
        files = {}
        for key, data, nodata in (("coords", coords, None), ("elev", elev, STAC_NODATA), ("labels", labels, None)):
            path = folder / f"scene{i}_{key}.tif"
            with rasterio.open(
                path, "w", driver="COG", width=size, height=size, count=data.shape[0], dtype=data.dtype,
                crs="EPSG:3857", transform=grid, nodata=nodata, overview_resampling="nearest",
            ) as dst:  # fmt: skip
                dst.write(data)
            files[key] = f"{href_base.rstrip('/')}/{path.name}" if href_base else str(path.resolve())
        left, top = grid.c, grid.f
        right, bottom = left + size * grid.a, top + size * grid.e
        lons, lats = warp_transform("EPSG:3857", "EPSG:4326", [left, right], [bottom, top])
        bbox = [min(lons), min(lats), max(lons), max(lats)]
        item = pystac.Item(
            id=f"scene-{i}",
            geometry=mapping(box(*bbox)),
            bbox=bbox,
            datetime=datetime.datetime(2024, i + 1, 1, tzinfo=datetime.timezone.utc),
            properties={"tile": "T1"},
        )
        cog = pystac.MediaType.COG
        item.add_asset("coords", pystac.Asset(files["coords"], media_type=cog, roles=["data"]))
        elev_asset = pystac.Asset(files["elev"], media_type=cog, roles=["data"])
        elev_asset.extra_fields["raster:bands"] = [
            {"data_type": "uint16", "nodata": STAC_NODATA, "scale": STAC_SCALE, "offset": STAC_OFFSET}
        ]
        item.add_asset("elev", elev_asset)
        item.add_asset("labels", pystac.Asset(files["labels"], media_type=cog, roles=["labels"]))
        items.append(item)
    out = folder / name
    pystac.ItemCollection(items).save_object(dest_href=str(out))
    return out


MASK_VIEWS = ("lookup", "table", "grid", "blocks", "window")
"""The warped views of a non-aligned mask (`crossgeo.io.mask_lookup`, `crossgeo.io.table_fits`,
`crossgeo.io.mask_view_for`)."""


def force_mask_view(monkeypatch: Any, view: str, block: int = 48) -> None:
    """Make `crossgeo.io.mask_view_for` pick ``view`` for any scene (a pytest ``monkeypatch`` undoes it).

    ``"lookup"``: rows and columns looked up where the warp separates (a mask in EPSG:4326 on the Web
    Mercator scene), the views below otherwise; ``"table"``: `crossgeo.grid.nearest_table` wherever it
    fits, separable or not (the lookup off), the views below otherwise; ``"grid"``: GDAL's cache share is unbounded;
    ``"blocks"``: no GDAL share, crossgeo's warped block cache unbounded, with ``block``-pixel blocks
    (small, so test windows straddle several); ``"window"``: neither.
    """
    import crossgeo.io

    monkeypatch.setattr(crossgeo.io, "LOOKUP_VIEW", view == "lookup")
    monkeypatch.setattr(crossgeo.io, "TABLE_VIEW", view == "table")
    monkeypatch.setattr(crossgeo.io, "GRID_VIEW_CACHE_SHARE", 1e6 if view == "grid" else 0.0)
    monkeypatch.setattr(crossgeo.io.mask_blocks, "max_bytes", 2**40 if view == "blocks" else 0)
    monkeypatch.setattr(crossgeo.io, "MASK_BLOCK", block)
