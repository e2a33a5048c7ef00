"""Several sources per image (`image_path` a list or a mapping), on real rasters written by rasterio.

The sources encode their own pixel coordinates (`crossgeo.testing.coordinate_bands`), so each
channel can be checked against an oracle: ``rasterio.warp.reproject`` of the whole source onto
the reference grid, or, across CRSs, the exact per-pixel answer from pyproj.
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.warp import reproject

import crossgeo.inspection
import crossgeo.io
from crossgeo import PatchSampler, RasterError
from crossgeo import testing as T
from crossgeo.grid import Grid

UTM = "EPSG:32632"
ORIGIN = (500000.0, 5000000.0)
SIZE = 64
REF = 600  # reference grid side (10 m pixels)


def band_file(folder: Path, name: str, res: float, *, count: int = 1, dtype: str = "uint16", **kw: Any) -> Path:
    """A coordinate-encoding band file at ``res`` metres covering the reference scene."""
    side = int(REF * 10 / res)
    data = T.coordinate_bands(side, side, dtype)[:count]
    transform = Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1])
    return T.write_raster(folder / f"{name}.tif", data, crs=UTM, transform=transform, **kw)


def ref_grid(folder: Path) -> Grid:
    with rasterio.open(folder / "B10.tif") as src:
        return Grid.of(src)


def mask_and_windows(folder: Path, rows: Any, cols: Any) -> tuple[Path, Path]:
    mask = T.write_raster(
        folder / "mask.tif",
        np.ones((1, REF, REF), np.uint8),
        crs=UTM,
        transform=Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]),
    )
    return mask, T.write_windows_table(folder / "windows.csv", rows, cols)


def oracle(path: Path, grid: Grid, resampling: Resampling) -> np.ndarray:
    """The whole source warped onto the reference grid by ``rasterio.warp.reproject``."""
    with rasterio.open(path) as src:
        out = np.zeros((src.count, grid.height, grid.width), dtype=src.dtypes[0])
        reproject(
            rasterio.band(src, list(range(1, src.count + 1))),
            out,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            resampling=resampling,
        )
    return out


def random_offsets(n: int, low: int, high: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(low, high, n), rng.integers(low, high, n)


@pytest.fixture(params=["grid", "window"])
def view(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both warped views of a non-aligned source (`crossgeo.io.mask_view_for` picks one by cache size)."""
    T.force_mask_view(monkeypatch, str(request.param))
    return str(request.param)


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_band_files_at_10_20_60_m_equal_reproject_of_each_source(tmp_path: Path, view: str, resampling: str) -> None:
    paths = {
        "B10": band_file(tmp_path, "B10", 10, count=3),
        "B20": band_file(tmp_path, "B20", 20, count=2),
        "B60": band_file(tmp_path, "B60", 60, count=2),
    }
    grid = ref_grid(tmp_path)
    rows, cols = random_offsets(20, 20, REF - SIZE - 20, seed=1)
    mask, windows = mask_and_windows(tmp_path, rows, cols)
    sources = {"B10": paths["B10"], "B20": {"path": paths["B20"]}, "B60": {"path": paths["B60"], "bands": [2, 1]}}
    sampler = PatchSampler(sources, mask, windows, SIZE, image_dtype="uint16", image_resampling=resampling, n_classes=2)
    assert sampler.channels == (("B10", 1), ("B10", 2), ("B10", 3), ("B20", 1), ("B20", 2), ("B60", 2), ("B60", 1))
    # Nearest onto a grid subdividing the source's pixels needs no warp (the "scaled" view); bilinear warps.
    warped = "scaled" if resampling == "nearest" else view
    assert [p.view for p in sampler._plan.image] == ["aligned", warped, warped]
    method = Resampling[resampling]
    expected = np.concatenate(
        [
            oracle(paths["B10"], grid, method),
            oracle(paths["B20"], grid, method),
            oracle(paths["B60"], grid, method)[::-1],
        ]
    ).astype(np.int64)
    for i in range(len(sampler)):
        patch = sampler[i]
        r, c = int(rows[i]), int(cols[i])
        truth = expected[:, r : r + SIZE, c : c + SIZE]
        assert patch.image.dtype == np.uint16 and patch.image_valid.all()
        assert patch.source_valid is not None and patch.source_valid.all()
        if resampling == "nearest":
            np.testing.assert_array_equal(patch.image, truth)
        else:
            assert np.abs(patch.image.astype(np.int64) - truth).max() <= 1
    # The 10 m source is on the reference grid itself: exactly the single-path read.
    single = PatchSampler(paths["B10"], mask, windows, SIZE, image_dtype="uint16")
    np.testing.assert_array_equal(sampler[3].image[:3], single[3].image)


def test_source_in_another_crs_nearest_agrees_with_the_exact_per_pixel_answer(tmp_path: Path, view: str) -> None:
    """A 20 m source in EPSG:3857: each reference pixel centre, moved with pyproj, lands in the pixel read."""
    band_file(tmp_path, "B10", 10, count=1)
    grid = ref_grid(tmp_path)
    left, bottom, right, top = grid.bounds
    to_merc = Transformer.from_crs(UTM, "EPSG:3857", always_xy=True)
    xs, ys = to_merc.transform(
        [left - 500, right + 500, left - 500, right + 500], [bottom - 500, bottom - 500, top + 500, top + 500]
    )
    res = 20.0
    merc_transform = Affine(res, 0, min(xs), 0, -res, max(ys))
    width, height = int((max(xs) - min(xs)) / res) + 1, int((max(ys) - min(ys)) / res) + 1
    merc = T.write_raster(
        tmp_path / "merc.tif",
        T.coordinate_bands(height, width, "uint16")[:2],
        crs="EPSG:3857",
        transform=merc_transform,
    )
    rows, cols = random_offsets(15, 0, REF - SIZE, seed=2)
    mask, windows = mask_and_windows(tmp_path, rows, cols)
    sampler = PatchSampler(
        [tmp_path / "B10.tif", merc], mask, windows, SIZE, image_dtype="uint16", image_resampling="nearest"
    )
    assert sampler.channels == (("B10", 1), ("merc", 1), ("merc", 2))
    assert sampler._plan.image[1].view == view
    agree = total = 0
    for i in range(len(sampler)):
        patch = sampler[i]
        r, c = int(rows[i]), int(cols[i])
        pr, pc = np.mgrid[r : r + SIZE, c : c + SIZE]
        x, y = grid.transform @ (pc + 0.5, pr + 0.5)
        mx, my = to_merc.transform(x, y)
        scol, srow = ~merc_transform @ (np.asarray(mx), np.asarray(my))
        agree += int(np.count_nonzero((patch.image[1] == np.floor(srow)) & (patch.image[2] == np.floor(scol))))
        total += SIZE * SIZE
    assert agree / total >= 0.999, agree / total


def test_a_geographic_source_nearest_agrees_with_the_exact_answer_on_large_windows(tmp_path: Path, view: str) -> None:
    """A source in EPSG:4326 (~13 m pixels) on 256-pixel windows of a 10 m UTM grid, nearest: >= 99.9 %.

    GDAL's default warp approximation (0.125 pixels, interpolated along each row of a window)
    put ~0.5 % of such pixels in a neighbouring source pixel in the benchmark's Sentinel-2-like
    scene (`benchmarks.s2_bench`); a nearest source warped per window uses `crossgeo.io.NEAREST_TOLERANCE`.
    """
    side, size = 1024, 256
    transform = Affine(10, 0, 600000.0, 0, -10, 5600040.0)
    ref = T.write_raster(tmp_path / "B10.tif", np.ones((1, side, side), np.uint16), crs=UTM, transform=transform)
    grid = Grid(side, side, transform, rasterio.crs.CRS.from_user_input(UTM))
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    left, bottom, right, top = grid.bounds
    lon0, lat0 = to_lonlat.transform(left - 200, top + 200)
    lon1, lat1 = to_lonlat.transform(right + 200, bottom - 200)
    lon0, lat1 = (
        min(lon0, to_lonlat.transform(left - 200, bottom - 200)[0]),
        min(lat1, to_lonlat.transform(left - 200, bottom - 200)[1]),
    )
    lon1, lat0 = (
        max(lon1, to_lonlat.transform(right + 200, top + 200)[0]),
        max(lat0, to_lonlat.transform(right + 200, top + 200)[1]),
    )
    res = 13 / 111320 / np.cos(np.radians(50.5))
    geo_transform = Affine(res, 0, lon0, 0, -res, lat0)
    width, height = int((lon1 - lon0) / res) + 1, int((lat0 - lat1) / res) + 1
    geo = T.write_raster(
        tmp_path / "geo.tif", T.coordinate_bands(height, width, "uint16")[:2], crs="EPSG:4326", transform=geo_transform
    )
    rows, cols = random_offsets(8, 0, side - size, seed=6)
    mask = T.write_raster(tmp_path / "mask.tif", np.ones((1, side, side), np.uint8), crs=UTM, transform=transform)
    windows = T.write_windows_table(tmp_path / "windows.csv", rows, cols)
    sources = {"ref": ref, "geo": {"path": geo, "resampling": "nearest"}}
    sampler = PatchSampler(sources, mask, windows, size, image_dtype="uint16")
    assert sampler._plan.image[1].view == view
    agree = total = 0
    for i in range(len(sampler)):
        patch = sampler[i]
        pr, pc = np.mgrid[rows[i] : rows[i] + size, cols[i] : cols[i] + size]
        lon, lat = to_lonlat.transform(*(grid.transform @ (pc + 0.5, pr + 0.5)))
        scol, srow = ~geo_transform @ (np.asarray(lon), np.asarray(lat))
        agree += int(np.count_nonzero((patch.image[1] == np.floor(srow)) & (patch.image[2] == np.floor(scol))))
        total += size * size
    assert agree / total >= 0.999, agree / total


def test_nearest_onto_a_subdividing_grid_reads_plainly_and_equals_the_warp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "scaled" view (plain reads, pixels repeated) gives what the nearest-neighbour warp gives, pixel for pixel.

    The source's pixels are 30 m high and 20 m wide, its origin one 10 m pixel left of and two above the
    reference's (pixel edges on reference edges, not on whole source pixels), it has nodata pixels and
    a per-dataset mask, and windows reach past its edges and the reference grid's.
    """
    band_file(tmp_path, "B10", 10, count=1)
    height, width = REF // 3 + 2, REF // 2 + 1
    data = T.coordinate_bands(height, width, "uint16")[:2]
    data[:, 5:9, 7:12] = 9  # nodata in both bands
    data[0, 20:30, 20:25] = 9  # nodata in one band only: still valid
    transform = Affine(20, 0, ORIGIN[0] - 10, 0, -30, ORIGIN[1] + 20)
    odd = T.write_raster(tmp_path / "odd.tif", data, crs=UTM, transform=transform, nodata=9)
    rows, cols = random_offsets(25, -SIZE // 2, REF - SIZE // 2, seed=5)
    rows[:3], cols[:3] = [-20, 0, 575], [0, -31, 590]
    mask, windows = mask_and_windows(tmp_path, rows, cols)
    sources = {"B10": tmp_path / "B10.tif", "odd": {"path": odd, "resampling": "nearest"}}
    options: dict[str, Any] = {"image_dtype": "uint16", "out_of_range": "fill"}
    scaled = PatchSampler(sources, mask, windows, SIZE, **options)
    assert [p.view for p in scaled._plan.image] == ["aligned", "scaled"]
    assert scaled._plan.image[1].shift == (2, 1) and scaled._plan.image[1].factor == (3, 2)
    with monkeypatch.context() as patched:
        patched.setattr(crossgeo.inspection, "scaled_offset", lambda *_: None)
        for forced in ("grid", "window"):
            T.force_mask_view(patched, forced)
            warp = PatchSampler(sources, mask, windows, SIZE, **options)
            assert warp._plan.image[1].view == forced
            for i in range(len(warp)):
                a, b = scaled[i], warp[i]
                np.testing.assert_array_equal(a.image_valid, b.image_valid)
                np.testing.assert_array_equal(a.source_valid, b.source_valid)
                assert a.image_valid.any()
                np.testing.assert_array_equal(a.image[:, a.image_valid], b.image[:, b.image_valid])
    # The values are the source pixels holding each reference pixel centre; outside the source, the
    # fill (its nodata) as in a plain read (a warp leaves its own fill under invalid pixels).
    for i in range(3):
        patch, r, c = scaled[i], int(rows[i]), int(cols[i])
        pr, pc = np.mgrid[r : r + SIZE, c : c + SIZE]
        src_r, src_c = (pr + 2) // 3, (pc + 1) // 2
        inside = (src_r >= 0) & (src_c >= 0) & (src_r < height) & (src_c < width)
        expected = np.full((2, SIZE, SIZE), 9, np.uint16)
        expected[:, inside] = data[:, src_r[inside], src_c[inside]]
        np.testing.assert_array_equal(patch.image[1:], expected)


def write_vrt_stack(path: Path, files: list[Path], grid: Grid) -> Path:
    """A VRT whose band k is band 1 of ``files[k]`` (all on ``grid``), written by hand."""
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{k}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{f}</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{grid.width}" ySize="{grid.height}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{grid.width}" ySize="{grid.height}"/>'
        "</SimpleSource></VRTRasterBand>"
        for k, f in enumerate(files, start=1)
    )
    path.write_text(
        f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}"><SRS>{UTM}</SRS>'
        f"<GeoTransform>{', '.join(map(str, grid.transform.to_gdal()))}</GeoTransform>{bands}</VRTDataset>"
    )
    return path


def test_band_files_and_a_vrt_stack_of_them_give_identical_patches(tmp_path: Path) -> None:
    full = T.coordinate_bands(REF, REF, "uint16")
    transform = Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])
    files = [
        T.write_raster(tmp_path / f"B0{k}.tif", full[k - 2 : k - 1], crs=UTM, transform=transform) for k in (2, 3, 4)
    ]
    b20 = band_file(tmp_path, "B20", 20, count=1)
    grid = Grid(REF, REF, transform, rasterio.crs.CRS.from_user_input(UTM))
    vrt = write_vrt_stack(tmp_path / "stack.vrt", files, grid)
    rows, cols = random_offsets(10, -SIZE // 2, REF - SIZE // 2, seed=3)
    mask, windows = mask_and_windows(tmp_path, rows, cols)
    options: dict[str, Any] = {"image_dtype": "uint16"}
    bands = PatchSampler([*files, b20], mask, windows, SIZE, **options)
    stacked = PatchSampler({"rgb": vrt, "B20": b20}, mask, windows, SIZE, **options)
    for i in range(len(bands)):
        a, b = bands[i], stacked[i]
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.image_valid, b.image_valid)
        np.testing.assert_array_equal(a.source_valid[[0, 3]], b.source_valid)


def test_each_source_is_read_once_per_window_per_thread_handles_and_pickles_without_handles(
    tmp_path: Path, view: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    band_file(tmp_path, "B10", 10, count=1)
    band_file(tmp_path, "B20", 20, count=1)
    rows, cols = random_offsets(8, 0, REF - SIZE, seed=4)
    mask, windows = mask_and_windows(tmp_path, rows, cols)
    sampler = PatchSampler([tmp_path / "B10.tif", tmp_path / "B20.tif"], mask, windows, SIZE, image_dtype="uint16")
    calls: dict[str, int] = {}
    real = crossgeo.io.SourceReader.read

    def counting(self: Any, *args: Any, **kw: Any) -> Any:
        calls[self.plan.what] = calls.get(self.plan.what, 0) + 1
        return real(self, *args, **kw)

    monkeypatch.setattr(crossgeo.io.SourceReader, "read", counting)
    first = [sampler[i].image for i in range(len(sampler))]
    assert calls == {"image source 'B10'": 8, "image source 'B20'": 8, "mask": 8}
    readers: list[Any] = []

    def in_thread() -> None:
        sampler[0]
        readers.append(sampler._reader())

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
    mine = sampler._reader()
    assert readers[0] is not mine
    assert all(a.dataset is not b.dataset for a, b in zip(readers[0].images, mine.images))
    copy = pickle.loads(pickle.dumps(sampler))
    assert len(copy._readers.values()) == 0  # no handle travelled
    for i in range(len(copy)):
        np.testing.assert_array_equal(copy[i].image, first[i])


def test_a_source_missing_from_windows_is_an_error_or_filled_and_flagged(tmp_path: Path) -> None:
    band_file(tmp_path, "B10", 10, count=1)
    # A 20 m source covering only the left half of the scene.
    half = T.write_raster(
        tmp_path / "half.tif",
        np.full((1, REF // 2, REF // 4), 7, np.uint16),
        crs=UTM,
        transform=Affine(20, 0, ORIGIN[0], 0, -20, ORIGIN[1]),
    )
    rows, cols = np.array([10, 10, 300]), np.array([10, 400, 500])
    mask, windows = mask_and_windows(tmp_path, rows, cols)
    sources = [tmp_path / "B10.tif", half]
    with pytest.raises(RasterError, match=r"'half'.*no pixel in 2 of 3 window.*missing: fill"):
        PatchSampler(sources, mask, windows, SIZE, image_dtype="uint16")
    sampler = PatchSampler(sources, mask, windows, SIZE, image_dtype="uint16", missing="fill")
    inside, outside = sampler[0], sampler[1]
    assert inside.source_valid.tolist() == [True, True] and (inside.image[1] == 7).all() and inside.image_valid.all()
    assert outside.source_valid.tolist() == [True, False]
    assert (outside.image[1] == 0).all() and not outside.image_valid.any()


def test_scale_offset_nodata_and_dtype_promotion(tmp_path: Path) -> None:
    b10 = band_file(tmp_path, "B10", 10, count=1, dtype="uint8")
    data = np.full((1, REF, REF), 1000, np.uint16)
    data[0, :50, :] = 0
    b16 = T.write_raster(
        tmp_path / "B16.tif", data, crs=UTM, transform=Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), nodata=0
    )
    mask, windows = mask_and_windows(tmp_path, [20, 200], [20, 200])
    promoted = PatchSampler([b10, b16], mask, windows, SIZE, image_dtype="native")
    assert promoted.image_dtype == np.uint16 and promoted[1].image.dtype == np.uint16
    patch = promoted[0]
    assert (patch.image_valid == (np.arange(20, 20 + SIZE) >= 50)[:, None]).all()  # B16's nodata rows
    scaled = PatchSampler(
        {"a": b10, "b": {"path": b16, "scale": 0.0001, "offset": 0.5}}, mask, windows, SIZE, image_dtype="float32"
    )
    image = scaled[1].image
    assert image.dtype == np.float32
    np.testing.assert_allclose(image[1], np.float32(1000 * 0.0001 + 0.5), rtol=1e-6)
    np.testing.assert_array_equal(image[0], promoted[1].image[0])


def test_reference_names_the_grid_source(tmp_path: Path) -> None:
    b10 = band_file(tmp_path, "B10", 10, count=1)
    b20 = band_file(tmp_path, "B20", 20, count=2)
    mask, windows = mask_and_windows(tmp_path, [0], [0])
    sampler = PatchSampler([b10, b20], mask, windows, 32, image_dtype="uint16", reference="B20")
    assert sampler.grid.width == REF // 2 and sampler.reference == "B20"
    assert [p.view for p in sampler._plan.image][1] == "aligned"
    image = sampler[0].image
    np.testing.assert_array_equal(image[1:], T.coordinate_bands(32, 32, "uint16")[:2])


def test_the_original_option_name_takes_a_list_and_same_stems_are_told_apart(tmp_path: Path) -> None:
    """``image_mbtiles_path`` (the original's name) accepts sources; a file listed twice gets ``stem``, ``stem_2``."""
    b10 = band_file(tmp_path, "B10", 10, count=1)
    mask, windows = mask_and_windows(tmp_path, [0], [0])
    sampler = PatchSampler(
        image_mbtiles_path=[b10, b10], mask_path=mask, crops_path=windows, patch_size=32, image_dtype="uint16"
    )
    assert sampler.channels == (("B10", 1), ("B10_2", 1))
    image = sampler[0].image
    np.testing.assert_array_equal(image[0], image[1])
