"""Tiled prediction and evaluation (issue 14), with numpy models on rasters written by rasterio.

The pointwise model's truth is the model applied to the whole raster at once; the blending
test measures seams numerically; evaluation is compared with a confusion matrix counted
directly from pixel-centre lookups in the mask.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.warp import transform as warp_transform
from testkit import sources_truth, write_sources_scene

import crossgeo
from crossgeo import testing as T
from crossgeo.errors import ConfigError, NoOverlapError, OptionError, RasterError, ReadError
from crossgeo.evaluation import Evaluation, evaluate
from crossgeo.grid import axis_offsets
from crossgeo.io import output_compression
from crossgeo.predict import blend_weights, predict_raster, prefetch

CRS = "EPSG:3857"
TRANSFORM = T.web_mercator_transform(12, 2176, 1460)


def pointwise(x: np.ndarray) -> np.ndarray:
    """Scores from each pixel's own values, by elementwise operations only (bit-identical in any batch)."""
    return np.stack([x[:, 0], x[:, 1], x[:, 2], np.float32(0.9) - x[:, 0]], axis=1)


def whole_raster(path: Path, bands: list[int] | None = None) -> np.ndarray:
    """The pointwise model applied to the whole raster at once: (K, H, W) scores."""
    with rasterio.open(path) as src:
        data = src.read(bands)
    return pointwise(data[None].astype(np.float32) / np.float32(255))[0]


def read(path: Path) -> tuple[np.ndarray, Any]:
    with rasterio.open(path) as src:
        return src.read(), src.profile


def image(tmp_path: Path, height: int, width: int, name: str = "image.tif", **kw: Any) -> Path:
    return T.write_raster(
        tmp_path / name, T.coordinate_bands(height, width, "uint8"), crs=CRS, transform=TRANSFORM, **kw
    )


# ---------------------------------------------------------------------- the window grid


def test_axis_offsets_stride_and_flush_last_window() -> None:
    assert axis_offsets(700, 256, 256).tolist() == [0, 256, 444]  # arguments: extent, patch size, stride
    assert axis_offsets(700, 256, 192).tolist() == [0, 192, 384, 444]  # overlap 64
    assert axis_offsets(512, 256, 256).tolist() == [0, 256]
    assert axis_offsets(100, 256, 192).tolist() == [0]  # smaller than a patch: one padded window
    assert axis_offsets(700, 256, 300).tolist() == [0, 300, 444]  # a stride longer than a patch leaves gaps


def test_linear_weights_are_a_positive_tent_and_none_picks_the_nearest_centre() -> None:
    w = blend_weights(np.array([0, 48, 96]), 64, 160, "linear")[0]
    assert w.min() == pytest.approx(1 / 64) and w.max() == pytest.approx(63 / 64) and (w > 0).all()
    np.testing.assert_array_equal(w, w[::-1])
    none = blend_weights(np.array([0, 48, 96]), 64, 160, "none")
    # centres 32, 80, 128: pixel centres up to 56 belong to window 0, up to 104 to window 1
    owner = np.full(160, -1)
    for j, off in enumerate([0, 48, 96]):
        owner[off : off + 64][none[j] == 1] = j
    assert owner[:56].tolist() == [0] * 56 and owner[56:104].tolist() == [1] * 48 and (owner[104:] == 2).all()


# ---------------------------------------------------------------------- exactness


@pytest.mark.parametrize("overlap", [0, 64])
@pytest.mark.parametrize("blend", ["linear", "none"])
def test_class_output_equals_the_model_on_the_whole_geotiff(tmp_path: Path, overlap: int, blend: str) -> None:
    path = image(tmp_path, 700, 900)  # neither a multiple of the patch
    result = predict_raster(
        path, pointwise, tmp_path / "pred.tif", patch_size=256, overlap=overlap, blend=blend, progress=False
    )
    truth = whole_raster(path)
    got, profile = read(result.path)
    np.testing.assert_array_equal(got[0], truth.argmax(axis=0))
    assert (profile["dtype"], profile["nodata"], result.n_classes, result.invalid_pixels) == ("uint8", 255, 4, 0)
    assert result.windows == len(axis_offsets(700, 256, 256 - overlap)) * len(axis_offsets(900, 256, 256 - overlap))
    scores = predict_raster(
        path, pointwise, tmp_path / "scores.tif", patch_size=256, overlap=overlap, blend=blend, output="scores"
    )
    got, _ = read(scores.path)
    np.testing.assert_allclose(got, truth, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("overlap", [0, 64])
def test_class_output_equals_the_model_on_the_whole_mbtiles(tmp_path: Path, overlap: int) -> None:
    tif = image(tmp_path, 512, 512, "tiles.tif")
    mbtiles = T.write_mbtiles(tif, tmp_path / "image.mbtiles")
    result = predict_raster(
        mbtiles, pointwise, tmp_path / "pred.tif", patch_size=200, overlap=overlap, selected_bands=[1, 2, 3]
    )
    got, profile = read(result.path)
    np.testing.assert_array_equal(got[0], whole_raster(mbtiles, [1, 2, 3]).argmax(axis=0))
    with rasterio.open(mbtiles) as src:
        assert (profile["crs"], profile["transform"], profile["width"], profile["height"]) == (
            src.crs,
            src.transform,
            src.width,
            src.height,
        )


def test_image_smaller_than_a_patch_is_padded_and_cropped(tmp_path: Path) -> None:
    path = image(tmp_path, 50, 70)
    result = predict_raster(path, pointwise, tmp_path / "pred.tif", patch_size=128, overlap=32, output="scores")
    got, profile = read(result.path)
    assert (profile["height"], profile["width"], result.windows) == (50, 70, 1)
    np.testing.assert_allclose(got, whole_raster(path), rtol=1e-6)


# ---------------------------------------------------------------------- outputs and georeferencing


def test_georeferencing_tiling_and_nodata_follow_the_image(real_data: Path, tmp_path: Path) -> None:
    """RGB.byte.tif (UTM 18N, nodata 0 on its rotated edges): same grid, nodata where the image has none."""
    source = real_data / "RGB.byte.tif"
    result = predict_raster(source, pointwise, tmp_path / "pred.tif", patch_size=256, overlap=32)
    with rasterio.open(source) as src, rasterio.open(result.path) as out:
        assert (out.crs, out.transform, out.width, out.height) == (src.crs, src.transform, src.width, src.height)
        assert out.block_shapes == [(256, 256)] and out.nodata == 255
        assert out.compression.value == output_compression()["compress"].upper()
        no_data = (src.read() == 0).all(axis=0)
        classes = out.read(1)
    assert no_data.sum() == result.invalid_pixels > 100_000
    assert (classes[no_data] == 255).all() and (classes[~no_data] < 4).all()


def test_alpha_band_marks_no_data(tmp_path: Path) -> None:
    data = T.coordinate_bands(300, 300, "uint8")
    alpha = np.full((1, 300, 300), 255, np.uint8)
    alpha[0, 100:150, 20:80] = 0
    path = T.write_raster(
        tmp_path / "rgba.tif",
        np.concatenate([data, alpha]),
        crs=CRS,
        transform=TRANSFORM,
        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha],
    )
    result = predict_raster(path, pointwise, tmp_path / "p.tif", patch_size=128, selected_bands=[1, 2, 3])
    got, _ = read(result.path)
    assert result.invalid_pixels == 50 * 60 and (got[0][alpha[0] == 0] == 255).all()
    np.testing.assert_array_equal(got[0][alpha[0] != 0], whole_raster(path, [1, 2, 3]).argmax(0)[alpha[0] != 0])


def test_internal_mask_band_marks_no_data(tmp_path: Path) -> None:
    path = image(tmp_path, 200, 260)
    hole = np.full((200, 260), 255, np.uint8)
    hole[30:90, 100:250] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        dst.write_mask(hole)
    result = predict_raster(path, pointwise, tmp_path / "p.tif", patch_size=64, overlap=16)
    got, _ = read(result.path)
    assert result.invalid_pixels == 60 * 150 and (got[0][hole == 0] == 255).all()
    np.testing.assert_array_equal(got[0][hole != 0], whole_raster(path).argmax(0)[hole != 0])


def test_probabilities_and_many_classes(tmp_path: Path) -> None:
    path = image(tmp_path, 90, 110, nodata=None)
    result = predict_raster(path, pointwise, tmp_path / "prob.tif", patch_size=64, overlap=16, output="probabilities")
    got, profile = read(result.path)
    truth = whole_raster(path)
    softmax = np.exp(truth - truth.max(0)) / np.exp(truth - truth.max(0)).sum(0)
    assert profile["dtype"] == "uint8" and profile["nodata"] == 255 and got.shape == (4, 90, 110)
    assert np.abs(got.astype(float) - softmax * 254).max() <= 0.5 + 1e-3

    def many(x: np.ndarray) -> np.ndarray:  # 300 classes: the winner is 256 + (column % 40)
        scores = np.zeros((x.shape[0], 300, *x.shape[2:]), np.float32)
        col = np.rint(x[:, 0] * 255).astype(int) % 40
        np.put_along_axis(scores, 256 + col[:, None], 1.0, axis=1)
        return scores

    result = predict_raster(path, many, tmp_path / "many.tif", patch_size=64, n_classes=300)
    got, profile = read(result.path)
    assert (profile["dtype"], profile["nodata"]) == ("uint16", 65535)
    np.testing.assert_array_equal(got[0], 256 + np.arange(110)[None, :].repeat(90, 0) % 256 % 40)


def scrambled(x: np.ndarray) -> np.ndarray:
    """7 scores per pixel in 0..4 from its (row, col) code: the winner changes from pixel to pixel, with many ties."""
    band = np.rint(x * 255).astype(np.int64)
    code = band[:, 0] + 256 * band[:, 1] + 65536 * band[:, 2]
    return np.stack([((code * (2 * k + 3) * 40503 + 977 * k) >> 7) % 5 for k in range(7)], axis=1).astype(np.float32)


@pytest.mark.parametrize(("overlap", "blend"), [(0, "linear"), (48, "none")])
def test_class_is_numpys_argmax_where_the_winner_changes_every_pixel_and_scores_tie(
    tmp_path: Path, overlap: int, blend: str
) -> None:
    """The first of equal scores wins, as in ``numpy.argmax``: each window decided at once (overlap 0) and
    strips converted after blending (overlap with ``blend="none"`` keeps every score exactly)."""
    path = image(tmp_path, 300, 333)
    result = predict_raster(
        path, scrambled, tmp_path / "pred.tif", patch_size=128, overlap=overlap, blend=blend, progress=False
    )
    with rasterio.open(path) as src:
        truth = scrambled(src.read()[None].astype(np.float32) / np.float32(255))[0]
    ties = (truth == truth.max(axis=0)).sum(axis=0) > 1
    assert ties.mean() > 0.3 and len(np.unique(truth.argmax(axis=0))) == 7  # the case is really irregular
    got, _ = read(result.path)
    np.testing.assert_array_equal(got[0], truth.argmax(axis=0))


def test_cog_is_valid_with_overviews_and_same_pixels(tmp_path: Path) -> None:
    path = image(tmp_path, 900, 1000)
    plain = predict_raster(path, pointwise, tmp_path / "plain.tif", patch_size=256, overlap=64)
    cog = predict_raster(path, pointwise, tmp_path / "cog.tif", patch_size=256, overlap=64, cog=True)
    with rasterio.open(cog.path) as out, rasterio.open(plain.path) as ref:
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert out.overviews(1) == [2, 4]
        assert (out.crs, out.transform, out.nodata) == (ref.crs, ref.transform, 255)
        np.testing.assert_array_equal(out.read(), ref.read())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cog.tif", "image.tif", "plain.tif"]


# ---------------------------------------------------------------------- blending


def _ramp_model(size: int) -> Callable[[np.ndarray], np.ndarray]:
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    field = (rows + 2 * cols) / size  # smooth in the patch; neighbours differ by at most 2 / size

    def model(x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.stack([field, -field]), (x.shape[0], 2, size, size)).copy()

    return model


def _largest_step(a: np.ndarray) -> float:
    return float(max(np.abs(np.diff(a, axis=0)).max(), np.abs(np.diff(a, axis=1)).max()))


@pytest.mark.parametrize("overlap", [16, 32])
def test_linear_blending_is_seamless_and_none_keeps_the_seams(tmp_path: Path, overlap: int) -> None:
    size = 64
    path = image(tmp_path, 250, 230)
    model = _ramp_model(size)
    inside = _largest_step(model(np.zeros((1, 3, size, size), np.float32))[0, 0])
    linear = predict_raster(path, model, tmp_path / "l.tif", patch_size=size, overlap=overlap, output="scores")
    none = predict_raster(
        path, model, tmp_path / "n.tif", patch_size=size, overlap=overlap, output="scores", blend="none"
    )
    blended, seams = read(linear.path)[0][0], read(none.path)[0][0]
    # Every window border lies in this raster; the largest step anywhere includes them all.
    assert _largest_step(blended) <= 3 * inside, (_largest_step(blended), inside)
    assert _largest_step(seams) > 10 * inside
    # A pixel covered by one window keeps that window's score (the first rows/cols before any overlap).
    np.testing.assert_allclose(
        blended[: size - overlap, : size - overlap],
        model(np.zeros((1, 3, size, size)))[0, 0][: size - overlap, : size - overlap],
        rtol=1e-6,
    )


# ---------------------------------------------------------------------- TTA


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_tta_equals_plain_prediction_for_a_pointwise_model(tmp_path: Path, tta: str) -> None:
    path = image(tmp_path, 300, 260)
    plain = predict_raster(path, pointwise, tmp_path / "plain.tif", patch_size=128, overlap=32, output="scores")
    tested = predict_raster(path, pointwise, tmp_path / "tta.tif", patch_size=128, overlap=32, output="scores", tta=tta)
    np.testing.assert_allclose(read(tested.path)[0], read(plain.path)[0], rtol=1e-6)
    classes = [predict_raster(path, pointwise, tmp_path / f"c{t}.tif", patch_size=128, tta=t) for t in (None, tta)]
    np.testing.assert_array_equal(read(classes[0].path)[0], read(classes[1].path)[0])
    # The model really sees transformed patches: a row ramp averages to its mean over the flips.
    ramp = np.arange(128, dtype=np.float32)[:, None].repeat(128, 1) / 128

    def rows(x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(ramp, (x.shape[0], 1, 128, 128)).copy()

    flat = predict_raster(path, rows, tmp_path / "ramp.tif", patch_size=128, output="scores", blend="none", tta=tta)
    np.testing.assert_allclose(read(flat.path)[0], 127 / 256, rtol=1e-6)


# ---------------------------------------------------------------------- memory and read-ahead


def test_memory_stays_within_two_strips_of_scores(tmp_path: Path) -> None:
    """Peak numpy memory (tracemalloc) of a 1024 x 8192 prediction with K = 8, patch 128, overlap 32.

    Measured here: about 46 MiB, against 32 MiB for one strip of scores (K x patch x width
    float32) and 256 MiB for a full-raster score array; the rest is the batches in flight.
    """
    size, k, height, width = 128, 8, 1024, 8192
    path = image(tmp_path, height, width)

    def model(x: np.ndarray) -> np.ndarray:
        return np.repeat(x[:, :1], k, axis=1)

    tracemalloc.start()
    try:
        result = predict_raster(path, model, tmp_path / "pred.tif", patch_size=size, overlap=32, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    strip = k * size * width * 4
    full = k * height * width * 4
    print(f"peak {peak / 2**20:.1f} MiB, one strip {strip / 2**20:.0f} MiB, full raster {full / 2**20:.0f} MiB")
    assert peak < 2 * strip and peak < full / 4
    got, _ = read(result.path)  # and the result is still right
    np.testing.assert_array_equal(got[0], np.zeros((height, width), np.uint8))


def test_prefetch_runs_ahead_in_another_thread_and_passes_errors() -> None:
    import threading

    seen: list[str] = []

    def produce() -> Any:
        for i in range(5):
            seen.append(threading.current_thread().name)
            yield i
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetch(produce(), 2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4] and set(seen) == {"crossgeo-prefetch"}
    closed = []

    def endless() -> Any:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    for item in prefetch(endless(), 3):
        if item == 10:
            break
    assert closed == [True]


# ---------------------------------------------------------------------- bad input


def _first_calls_then(fail: Callable[[np.ndarray], Any], calls: int = 2) -> Callable[[np.ndarray], Any]:
    count = [0]

    def model(x: np.ndarray) -> Any:
        count[0] += 1
        return pointwise(x) if count[0] <= calls else fail(x)

    return model


BAD_MODELS: list[tuple[str, Callable[[np.ndarray], Any], dict[str, Any], str]] = [
    ("wrong N", lambda x: pointwise(x)[:1], {}, r"predict returned scores of shape \(1, 4, 64, 64\).*\(N, K, H, W\)"),
    ("wrong spatial", lambda x: pointwise(x)[..., :-1], {}, r"shape \(4, 4, 64, 63\) for a batch"),
    ("channels last", lambda x: pointwise(x).transpose(0, 2, 3, 1), {}, r"channels first"),
    ("K vs n_classes", pointwise, {"n_classes": 3}, r"4 score bands but n_classes is 3"),
    ("NaN", _first_calls_then(lambda x: pointwise(x) * np.nan), {}, r"NaN or infinite scores \(batch from window"),
    ("K changes", _first_calls_then(lambda x: pointwise(x)[:, :2]), {}, r"2 score bands, earlier 4"),
]


@pytest.mark.parametrize(("model", "kw", "message"), [c[1:] for c in BAD_MODELS], ids=[c[0] for c in BAD_MODELS])
def test_bad_model_output_is_a_clear_error_and_leaves_no_file(
    tmp_path: Path, model: Callable[[np.ndarray], Any], kw: dict[str, Any], message: str
) -> None:
    path = image(tmp_path, 200, 200)
    with pytest.raises(ConfigError, match=message):
        predict_raster(path, model, tmp_path / "pred.tif", patch_size=64, batch_size=4, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif"]


BAD_OPTIONS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("overlap = patch", {"overlap": 64}, ConfigError, r"overlap must be smaller than patch_size \(64\), got 64"),
    ("overlap > patch", {"overlap": 100}, ConfigError, r"overlap must be smaller than patch_size"),
    ("negative overlap", {"overlap": -1}, ConfigError, r"overlap must be >= 0, got -1"),
    ("blend", {"blend": "gauss"}, ConfigError, r"blend 'gauss' is not one of 'linear', 'none'"),
    ("output", {"output": "labels"}, ConfigError, r"output 'labels' is not one of"),
    ("tta", {"tta": "rot"}, ConfigError, r"tta 'rot' is not one of None, 'flips', 'd4'"),
    ("batch size", {"batch_size": 0}, ConfigError, r"batch_size must be >= 1"),
    ("bands", {"selected_bands": [4]}, ConfigError, r"selected_bands \[4\] asks for band 4"),
    ("dtype", {"image_dtype": "int8"}, ConfigError, r"image_dtype 'int8' is not one of"),
]


@pytest.mark.parametrize(("kw", "error", "message"), [c[1:] for c in BAD_OPTIONS], ids=[c[0] for c in BAD_OPTIONS])
def test_bad_options_are_refused_before_any_read(
    tmp_path: Path, kw: dict[str, Any], error: type[Exception], message: str
) -> None:
    path = image(tmp_path, 100, 100)
    with pytest.raises(error, match=message):
        predict_raster(path, pointwise, tmp_path / "pred.tif", **{"patch_size": 64, **kw})
    assert not (tmp_path / "pred.tif").exists()


def test_output_paths_are_checked(tmp_path: Path) -> None:
    path = image(tmp_path, 100, 100)
    (tmp_path / "old.tif").write_bytes(b"keep me")
    with pytest.raises(ConfigError, match=r"out_path .*old.tif' already exists; pass overwrite=True"):
        predict_raster(path, pointwise, tmp_path / "old.tif", patch_size=64)
    assert (tmp_path / "old.tif").read_bytes() == b"keep me"
    result = predict_raster(path, pointwise, tmp_path / "old.tif", patch_size=64, overwrite=True)
    assert read(result.path)[0].shape == (1, 100, 100)
    with pytest.raises(ConfigError, match=r"the folder .*missing' does not exist"):
        predict_raster(path, pointwise, tmp_path / "missing" / "p.tif", patch_size=64)
    with pytest.raises(ConfigError, match=r"the folder .*image.tif' does not exist \(or is a file\)"):
        predict_raster(path, pointwise, tmp_path / "image.tif" / "p.tif", patch_size=64)
    with pytest.raises(ConfigError, match=r"out_path .* cannot be written .*choose a folder you can write to"):
        predict_raster(path, pointwise, "/proc/crossgeo-prediction.tif", patch_size=64)
    with pytest.raises(OptionError, match="predict must be a callable"):
        predict_raster(path, "model.pt", tmp_path / "p.tif", patch_size=64)  # type: ignore[arg-type]


def test_a_crash_half_way_leaves_no_complete_looking_file(tmp_path: Path) -> None:
    path = image(tmp_path, 600, 600)
    (tmp_path / "out").mkdir()

    def crash(x: np.ndarray) -> Any:
        raise RuntimeError("GPU fell off the bus")

    with pytest.raises(RuntimeError, match="GPU fell off"):
        predict_raster(path, _first_calls_then(crash, 3), tmp_path / "out" / "pred.tif", patch_size=64, batch_size=2)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_damaged_image_tile_fails_naming_the_file_and_window(tmp_path: Path) -> None:
    mbtiles, _, _ = T.write_damaged_mbtiles_scene(tmp_path)
    (tmp_path / "out").mkdir()
    with pytest.raises(ReadError, match=r"Reading the image .*damaged.mbtiles failed for the window row_off="):
        predict_raster(mbtiles, pointwise, tmp_path / "out" / "p.tif", patch_size=128, selected_bands=[1, 2, 3])
    assert list((tmp_path / "out").iterdir()) == []


# ---------------------------------------------------------------------- evaluation


def _pixel_centre_truth(prediction: Path, mask: Path) -> np.ndarray:
    """The mask class under every prediction pixel centre (transformed and looked up directly)."""
    with rasterio.open(prediction) as pred, rasterio.open(mask) as src:
        rows, cols = np.mgrid[0 : pred.height, 0 : pred.width]
        xs, ys = pred.transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
        mx, my = warp_transform(pred.crs, src.crs, xs, ys)
        mc, mr = ~src.transform @ (np.asarray(mx), np.asarray(my))
        return src.read(1)[np.floor(mr).astype(int), np.floor(mc).astype(int)].reshape(pred.shape).astype(np.int64)


def test_evaluate_matches_a_direct_confusion_matrix_on_real_data(real_data: Path, tmp_path: Path) -> None:
    """A brightness prediction on RGB.byte.tif (UTM 18N) against the world land mask (EPSG:4326)."""

    def bright(x: np.ndarray) -> np.ndarray:
        return np.stack([np.float32(0.25) - x[:, 0], x[:, 0] - np.float32(0.25)], axis=1)

    result = predict_raster(real_data / "RGB.byte.tif", bright, tmp_path / "pred.tif", patch_size=256, overlap=32)
    metrics = crossgeo.evaluate(result.path, real_data / "world.byte.tif", n_classes=2)
    assert isinstance(metrics, Evaluation) and metrics.n_classes == 2
    predicted = read(result.path)[0][0].astype(np.int64)
    reference = _pixel_centre_truth(result.path, real_data / "world.byte.tif")
    keep = predicted != 255
    confusion = np.bincount(reference[keep] * 2 + predicted[keep], minlength=4).reshape(2, 2)
    np.testing.assert_array_equal(metrics.confusion, confusion)
    tp = np.diag(confusion)
    np.testing.assert_allclose(metrics.iou, tp / (confusion.sum(0) + confusion.sum(1) - tp))
    np.testing.assert_allclose(metrics.precision, tp / confusion.sum(0))
    np.testing.assert_allclose(metrics.recall, tp / confusion.sum(1))
    np.testing.assert_allclose(metrics.f1, 2 * tp / (confusion.sum(0) + confusion.sum(1)))
    assert metrics.accuracy == pytest.approx(tp.sum() / confusion.sum())
    assert metrics.pixels == keep.sum() and metrics.ignored["prediction_nodata"] == (~keep).sum()
    assert confusion.min() > 10_000  # both classes present in both maps: a real test of the counting


def test_evaluate_on_an_aligned_colour_mask_with_gaps_and_windows(tmp_path: Path) -> None:
    height, width = 300, 340
    classes = (np.arange(width)[None, :] // 50 % 3).repeat(height, 0)
    palette = np.array([(0, 0, 0), (255, 0, 0), (0, 255, 0)], np.uint8)
    rgb = palette[classes].transpose(2, 0, 1)
    mask = T.write_raster(tmp_path / "mask.tif", rgb, crs=CRS, transform=TRANSFORM @ Affine.translation(0, 20))
    predicted = (np.arange(height)[:, None] // 40 % 3).repeat(width, 1).astype(np.uint8)
    predicted[:10, :10] = 255
    pred = T.write_raster(tmp_path / "pred.tif", predicted[None], crs=CRS, transform=TRANSFORM, nodata=255)
    color_map = [[*map(int, c), i] for i, c in enumerate(palette)]
    metrics = evaluate(pred, mask, n_classes=3, color_map=color_map, mask_fill_value=2, tile=128)
    # The mask starts 20 rows lower: image rows 0..19 have no mask data.
    reference = np.full((height, width), -1)
    reference[20:] = classes[: height - 20]
    keep = (reference >= 0) & (predicted != 255) & (reference != 2)
    confusion = np.bincount(reference[keep] * 3 + predicted[keep], minlength=9).reshape(3, 3)
    np.testing.assert_array_equal(metrics.confusion, confusion)
    assert metrics.ignored == {
        "no_mask_data": 20 * width,
        "prediction_nodata": 0,
        "ignore_value": int(((reference == 2) & (predicted != 255)).sum()),
    }
    windowed = evaluate(pred, mask, n_classes=3, color_map=color_map, windows=[(100, 0, 64), (100, 0, 64)])
    part = reference[100:164, :64], predicted[100:164, :64]
    once = np.bincount(part[0].ravel() * 3 + part[1].ravel(), minlength=9).reshape(3, 3)
    np.testing.assert_array_equal(windowed.confusion, 2 * once)  # a pixel counts once per window


def test_evaluate_bad_input(tmp_path: Path, real_data: Path) -> None:
    pred = T.write_raster(tmp_path / "pred.tif", np.full((1, 64, 64), 3, np.uint8), crs=CRS, transform=TRANSFORM)
    far = T.write_raster(
        tmp_path / "far.tif", np.zeros((1, 64, 64), np.uint8), crs=CRS, transform=Affine(10, 0, 0, 0, -10, 0)
    )
    with pytest.raises(NoOverlapError, match=r"prediction_path and mask_path do not overlap"):
        evaluate(pred, far, n_classes=4)
    near = T.write_raster(tmp_path / "near.tif", np.zeros((1, 64, 64), np.uint8), crs=CRS, transform=TRANSFORM)
    with pytest.raises(ConfigError, match=r"predicted class 3 .* outside 0..2 \(n_classes=3\)"):
        evaluate(pred, near, n_classes=3)
    scores = T.write_raster(tmp_path / "s.tif", np.zeros((2, 64, 64), np.float32), crs=CRS, transform=TRANSFORM)
    with pytest.raises(RasterError, match=r"prediction_path .* has 2 band\(s\) of float32.*output='class'"):
        evaluate(scores, near, n_classes=4)
    with pytest.raises(ConfigError, match="windows entry 0"):
        evaluate(pred, near, n_classes=4, windows=[(0, 0)])  # type: ignore[list-item]


def test_moved_names_stay_importable_from_crossgeo_predict() -> None:
    """evaluate / read_classes moved to crossgeo.evaluation and model_file_framework to crossgeo.models."""
    from crossgeo import evaluation, models
    from crossgeo import predict as module

    assert module.evaluate is evaluation.evaluate is crossgeo.evaluate
    assert module.read_classes is evaluation.read_classes
    assert module.model_file_framework is models.model_file_framework
    assert crossgeo.Evaluation is evaluation.Evaluation


@pytest.mark.parametrize("read_threads", [2, 3])
def test_read_threads_write_what_one_reader_writes(tmp_path: Path, read_threads: int) -> None:
    """Windows read by a pool of threads (`crossgeo.readahead.ReadAhead`) give the one-reader output, byte for byte."""
    src = image(tmp_path, 150, 170)
    seen: list[np.ndarray] = []

    def model(x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        return pointwise(x)

    one = predict_raster(src, model, tmp_path / "one.tif", patch_size=32, overlap=8, batch_size=5, read_threads=0)
    batches, seen[:] = list(seen), []
    pool = predict_raster(
        src, model, tmp_path / "pool.tif", patch_size=32, overlap=8, batch_size=5, read_threads=read_threads
    )
    assert len(seen) == len(batches) and all((a == b).all() for a, b in zip(seen, batches))  # same batches, in order
    np.testing.assert_array_equal(read(pool.path)[0], read(one.path)[0])
    with pytest.raises(ConfigError, match="read_threads must be a whole number"):
        predict_raster(src, model, tmp_path / "bad.tif", patch_size=32, read_threads=-1)


# ---------------------------------------------------------------------- several sources (issue 24.1)


def identity(x: np.ndarray) -> np.ndarray:
    """One score per channel: the model's input itself (what it saw is what gets written)."""
    return x.copy()


def _sources(folder: Path) -> dict[str, Any]:
    scene = write_sources_scene(folder, b20_rows=70)  # B20 covers the top 140 of 200 reference rows
    return {"B10": scene["B10"], "B20": {"path": scene["B20"], "resampling": "nearest"}}


@pytest.mark.parametrize(("batch_size", "threads_expected"), [(8, False), (1, True)])
def test_an_image_of_one_batch_is_read_in_the_calling_thread(
    tmp_path: Path, batch_size: int, threads_expected: bool
) -> None:
    """4 windows in one batch: no reading or read-ahead thread is started (their first open costs more than
    the reads); in 4 batches of 1 the pool reads them. The classes are the same."""
    path = image(tmp_path, 300, 333)  # 2 x 2 windows of 256
    running: set[str] = set()

    def model(x: np.ndarray) -> np.ndarray:
        running.update(thread.name for thread in threading.enumerate())
        return pointwise(x)

    result = predict_raster(path, model, tmp_path / "pred.tif", patch_size=256, batch_size=batch_size, progress=False)
    readers = {name for name in running if name.startswith(("crossgeo-read", "crossgeo-prefetch"))}
    assert bool(readers) == threads_expected, running
    got, _ = read(result.path)
    np.testing.assert_array_equal(got[0], whole_raster(path).argmax(axis=0))


@pytest.mark.parametrize("overlap, blend", [(0, "linear"), (24, "none")])
def test_a_multi_source_image_is_stacked_as_the_sampler_stacks_it_and_written_on_the_reference_grid(
    tmp_path: Path, overlap: int, blend: str
) -> None:
    sources = _sources(tmp_path)
    result = predict_raster(
        sources,
        identity,
        tmp_path / "pred.tif",
        patch_size=64,
        overlap=overlap,
        blend=blend,
        image_dtype="float32",
        output="scores",
        progress=False,
    )
    truth, valid = sources_truth(70)
    scores, profile = read(result.path)
    with rasterio.open(sources["B10"]) as ref:
        assert (profile["crs"], profile["transform"]) == (ref.crs, ref.transform)
        assert (profile["height"], profile["width"]) == (ref.height, ref.width)
    assert result.n_classes == 3
    if blend == "none":  # each pixel's score from one window: exactly what the model saw
        np.testing.assert_array_equal(scores[:, valid], truth[:, valid])
    else:  # the flush last window overlaps its neighbour: a weighted mean of equal values, float32 rounding
        np.testing.assert_allclose(scores[:, valid], truth[:, valid], rtol=1e-6)
    assert np.isnan(scores[:, ~valid]).all()  # B20 has no data there: nodata, counted
    assert result.invalid_pixels == int((~valid).sum()) == 60 * 240


def test_multi_source_reference_names_the_output_grid_and_the_model_sees_the_sampler_channels(tmp_path: Path) -> None:
    """reference='B20': the output is on the 20 m grid; every window holds what PatchSampler reads there."""
    scene = write_sources_scene(tmp_path)
    sources = {"B10": {"path": scene["B10"], "resampling": "average"}, "B20": scene["B20"]}
    result = predict_raster(
        sources, identity, tmp_path / "pred.tif", patch_size=20, reference="B20", image_dtype="float32",
        output="scores", progress=False,
    )  # fmt: skip
    scores, profile = read(result.path)
    with rasterio.open(scene["B20"]) as ref:
        assert (profile["crs"], profile["transform"], profile["height"], profile["width"]) == (
            ref.crs, ref.transform, ref.height, ref.width,
        )  # fmt: skip
    rows, cols = np.mgrid[0:100:20, 0:120:20]
    table = T.write_windows_table(tmp_path / "tiles.csv", rows.ravel(), cols.ravel())
    sampler = crossgeo.PatchSampler(
        sources, scene["mask"], table, 20, reference="B20", image_dtype="float32", n_classes=3
    )
    assert sampler.channels == (("B10", 1), ("B10", 2), ("B20", 1))
    for i in range(len(sampler)):
        patch = sampler[i]
        r, c = patch.row_off, patch.col_off
        np.testing.assert_array_equal(scores[:, r : r + 20, c : c + 20], patch.image)
    # B10 averaged onto 20 m: the mean of each 2 x 2 block of its rows (2i and 2i + 1), warped in uint16 (rounded).
    assert np.abs(scores[0, :, 0] - (np.arange(100) * 2 + 0.5)).max() == 0.5
    np.testing.assert_array_equal(scores[2], np.mgrid[0:100, 0:120][0].astype(np.float32))


def test_multi_source_predict_refuses_selected_bands_and_unknown_reference(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    out = tmp_path / "pred.tif"
    with pytest.raises(ConfigError, match="selected_bands applies to one image"):
        predict_raster(sources, identity, out, patch_size=64, selected_bands=[1], progress=False)
    with pytest.raises(ConfigError, match="reference 'B60' names no source"):
        predict_raster(sources, identity, out, patch_size=64, reference="B60", progress=False)
    with pytest.raises(ConfigError, match=r"image_path\['B10'\]"):  # a source is an input: never overwritten
        predict_raster(sources, identity, sources["B10"], patch_size=64, overwrite=True, progress=False)
    assert not out.exists()


def test_evaluate_a_prediction_of_a_multi_source_image_against_its_mask(tmp_path: Path) -> None:
    """argmax of the identity scores on the reference grid, compared with the mask: a confusion counted directly."""
    sources = _sources(tmp_path)
    result = predict_raster(
        sources, identity, tmp_path / "pred.tif", patch_size=64, image_dtype="float32", progress=False
    )
    truth, valid = sources_truth(70)
    predicted = np.argmax(truth, axis=0)
    rows, cols = np.mgrid[0:200, 0:240]
    reference = (rows // 8 + cols // 8) % 3
    metrics = evaluate(result.path, tmp_path / "mask.tif", n_classes=3)
    expected = np.bincount(reference[valid] * 3 + predicted[valid], minlength=9).reshape(3, 3)
    np.testing.assert_array_equal(metrics.confusion, expected)
    assert metrics.ignored["prediction_nodata"] == int((~valid).sum())
