"""The demo scene behind ``crossgeo demo``: a small, realistic landscape with known labels.

`write_demo_scene` writes, into one folder, what a real project has:

* ``image.tif`` - an RGB uint8 GeoTIFF on the Web Mercator tile grid (zoom 15, 4 x 4
  tiles, 1024 x 1024 pixels of about 3.3 m on the ground);
* ``image.mbtiles`` - the same pixels as MBTiles (PNG tiles; reads back as RGBA);
* ``mask.tif`` - a colour-coded RGB mask in EPSG:4326 at another resolution (about
  2.3 m x 3.3 m), so the mask is warped onto the image grid;
* ``windows.csv`` (pixel offsets) and ``windows.gpkg`` (points in EPSG:4326, layer
  ``training_windows``; one outside the image, a few near the edges);
* ``config.yaml`` (MBTiles + CSV windows) and ``config-vector.yaml`` (GeoTIFF + GeoPackage),
  both with the original ``MBTilesCropsGeoTifMaskDataset`` keys under ``train_dataset:``,
  and the class names under a top-level ``class_names:`` (read by the ``crossgeo`` command);
* ``windows-split.parquet`` - windows planned with `crossgeo.planning.plan_windows` (grid
  candidates at half the patch size, leak-free train/val/test blocks, a class-balanced
  choice in each split, a ``weight`` column) and ``config-split.yaml``, whose
  ``train_dataset`` and ``val_dataset`` read it with ``split: train`` / ``split: val``.

`train_tiny_model` trains a tiny segmentation network on a sampler for a few steps with
torch or TensorFlow (imported only inside it), and `predict_scene` predicts the whole scene
with it and evaluates the prediction against the mask, as ``crossgeo demo`` does.

The landscape (a river, a lake, forest, a town with a street grid, a patchwork of fields)
is a deterministic function of longitude/latitude. The image colours its pixels by the
class at each pixel centre (with texture), and the mask is written from the same function
on its own grid: the two agree exactly up to the mask's resolution, so a model can learn
the classes and a misaligned mask would show.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import rasterio
from affine import Affine
from rasterio.warp import transform_bounds

from crossgeo import testing as T
from crossgeo.files import atomic_output

if TYPE_CHECKING:
    from crossgeo.evaluation import Evaluation
    from crossgeo.predict import Prediction

CENTRE = (8.5417, 47.3769)
"""The scene's centre (longitude, latitude) in degrees; the landscape itself is synthetic."""
ZOOM = 15
TILES = 4
PATCH_SIZE = 128
EARTH_RADIUS = 6378137.0
MASK_RESOLUTION = (0.00003, 0.00003)
"""Mask pixel size in degrees (lon, lat): finer than the image across, similar along."""

CLASSES = (
    (0, "background", (0, 0, 0)),
    (1, "water", (0, 0, 255)),
    (2, "forest", (0, 255, 0)),
    (3, "building", (255, 0, 0)),
)
"""``(class, name, mask colour)``; class 0 is left out of the colour map on purpose (black,
"unknown colours are background"), as in the original ``MBTilesCropsGeoTifMaskDataset``'s examples."""
COLOR_MAP = [[*colour, cls] for cls, _, colour in CLASSES if cls != 0]
CLASS_NAMES = {cls: name for cls, name, _ in CLASSES}
SPLIT_WINDOWS = 120
"""Windows asked of ``windows-split.parquet``: train 96, test 12, and val all its 9 candidates (held-out splits
are never oversampled)."""
SPLIT_PLAN_KEYS = ("image_mbtiles_path", "mask_path", "patch_size", "selected_bands", "color_map")
SPLIT_WINDOWS_COMMAND = (
    f"crossgeo windows config.yaml --grid {PATCH_SIZE // 2} --balanced {SPLIT_WINDOWS} "
    f"--split train=0.8,val=0.1,test=0.1 --block {2 * PATCH_SIZE} --weights --out windows-split.parquet "
    "--map windows-split.png"
)
"""The command that writes the demo's ``windows-split.parquet`` again (and its map)."""


def tile_of(lon: float, lat: float, zoom: int) -> tuple[int, int]:
    """The Web Mercator (XYZ) tile column and row holding a point."""
    n = 2**zoom
    col = int((lon + 180.0) / 360.0 * n)
    lat_r = math.radians(lat)
    row = int((1.0 - math.asinh(math.tan(lat_r)) / math.pi) / 2.0 * n)
    return col, row


def _hash01(*ints: np.ndarray) -> np.ndarray:
    """A deterministic pseudo-random value in [0, 1) per integer cell id."""
    h = np.zeros(np.broadcast(*ints).shape, dtype=np.uint64)
    for k, values in enumerate(ints):
        h ^= (np.asarray(values).astype(np.int64).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15 + k)) * np.uint64(
            0xBF58476D1CE4E5B9
        )
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _rotate(x: np.ndarray, y: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    a = math.radians(degrees)
    return x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)


def _local_metres(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon0, lat0 = CENTRE
    return (lon - lon0) * 111320.0 * math.cos(math.radians(lat0)), (lat - lat0) * 110540.0


def landscape(lon: np.ndarray, lat: np.ndarray) -> dict[str, np.ndarray]:
    """Classes and the surface layout at points (degrees): the ground truth of the scene.

    Returns ``classes`` (int64) and helper fields used to texture the image
    (``parcel`` value for fields, ``roof`` value for buildings, ``street``, ``river``).
    """
    x, y = _local_metres(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    classes = np.zeros(x.shape, dtype=np.int64)

    # A meandering river across the scene and a lake.
    centre = 320 * np.sin(2 * np.pi * x / 2300 + 0.6) + 110 * np.sin(2 * np.pi * x / 730) - 650
    width = 55 + 18 * np.sin(2 * np.pi * x / 900)
    river = np.abs(y - centre) < width / 2
    lx, ly = _rotate(x - 850, y - 750, 25)
    lake = (lx / 430) ** 2 + (ly / 250) ** 2 < 1 + 0.08 * np.sin(5 * np.arctan2(ly, lx))
    water = river | lake

    # A town with a rotated street grid; buildings on some lots of each block.
    tx, ty = _rotate(x + 750, y - 450, 18)
    town = (tx / 820) ** 2 + (ty / 680) ** 2 < 1 + 0.15 * np.sin(3 * np.arctan2(ty, tx))
    block, street_w, lot = 120.0, 12.0, 40.0
    bx, by = np.mod(tx, block), np.mod(ty, block)
    street = town & ((bx < street_w) | (by < street_w))
    lot_x, lot_y = np.floor((tx) / lot), np.floor((ty) / lot)
    in_lot_x, in_lot_y = np.mod(tx, lot), np.mod(ty, lot)
    lot_hash = _hash01(lot_x, lot_y)
    margin = 4 + 4 * lot_hash
    building = (
        town
        & ~street
        & (lot_hash < 0.78)
        & (in_lot_x > margin)
        & (in_lot_x < lot - margin)
        & (in_lot_y > margin)
        & (in_lot_y < lot - margin * 0.7)
    )

    # Forest where a smooth field is high, away from town and water.
    field = (
        np.sin(x / 310 + 1.3) * np.cos(y / 270 - 0.4)
        + 0.6 * np.sin((x + y) / 190 + 2.1)
        + 0.4 * np.cos((x - 2 * y) / 150)
    )
    forest = (field > 0.55) & ~town & ~water

    classes[forest] = 2
    classes[building] = 3
    classes[water] = 1
    px, py = _rotate(x, y, -12)
    parcel = _hash01(np.floor(px / 260), np.floor(py / 170))
    return {
        "classes": classes,
        "parcel": parcel,
        "roof": lot_hash,
        "street": street & ~water,
        "town": town & ~water,
        "river": river,
        "furrow": np.sin(px / 4.0),
    }


def render_image(lon: np.ndarray, lat: np.ndarray, seed: int = 0) -> np.ndarray:
    """(3, H, W) uint8 colours of the landscape at the given pixel centres."""
    land = landscape(lon, lat)
    classes = land["classes"]
    rgb = np.zeros((*classes.shape, 3), dtype=np.float64)

    field_tones = np.array([(172, 160, 112), (122, 142, 72), (150, 132, 92), (186, 176, 132), (102, 126, 62)], float)
    tone = field_tones[np.minimum((land["parcel"] * len(field_tones)).astype(int), len(field_tones) - 1)]
    rgb[:] = tone + 6 * land["furrow"][..., None]
    garden = land["town"] & (classes == 0)
    rgb[garden] = (92, 128, 70)
    rgb[land["street"]] = (118, 116, 112)
    rgb[classes == 2] = (46, 78, 42)
    roofs = np.array([(162, 82, 62), (140, 140, 142), (182, 112, 82), (112, 110, 122)], float)
    roof = roofs[np.minimum((land["roof"] * 7).astype(int) % len(roofs), len(roofs) - 1)]
    rgb[classes == 3] = roof[classes == 3]
    rgb[classes == 1] = (48, 78, 104)
    rgb[(classes == 1) & land["river"]] = (66, 88, 92)

    rng = np.random.default_rng(seed)
    noise = np.asarray(rng.normal(0.0, 5.0, rgb.shape))
    noise[classes == 2] = noise[classes == 2] * 2.5  # canopy texture
    rgb += noise
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def _mercator_to_lonlat(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon = np.degrees(x / EARTH_RADIUS)
    lat = np.degrees(np.arctan(np.sinh(y / EARTH_RADIUS)))
    return lon, lat


def _apply(transform: Affine, col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of pixel-space points (arrays) under an affine transform."""
    a, b, c, d, e, f = tuple(transform)[:6]
    return a * col + b * row + c, d * col + e * row + f


def _yaml_config(values: dict[str, Any], **blocks: dict[str, Any]) -> str:
    """A YAML file with ``values`` under ``train_dataset:``, any other ``blocks``, and the class names."""
    import yaml

    return yaml.safe_dump(
        {"train_dataset": values, **blocks, "class_names": list(CLASS_NAMES.values())},
        sort_keys=False,
        default_flow_style=None,
    )


def _written(path: Path, write: Callable[[Path], Any], *, new_file: bool = False) -> Path:
    """``path``, written whole or not at all (`crossgeo.files.atomic_output`) by ``write(temporary)``.

    ``new_file``: the writer wants to create the file itself (GeoPackage, MBTiles: SQLite).
    """
    with atomic_output(path, option="demo file") as temp:
        if new_file:
            temp.unlink()
        write(temp)
    return path


def write_demo_scene(
    folder: str | os.PathLike[str], *, seed: int = 0, with_augmentation: bool | None = None
) -> dict[str, Path]:
    """Write the demo scene into ``folder`` (created if needed) and return its files by name.

    ``with_augmentation`` adds flips to the configs' ``augmentation_list`` (default: when
    albumentations is importable, so the configs validate wherever they were written).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = _write_rasters(folder, seed)
    files.update(_write_windows(folder, seed))
    if with_augmentation is None:
        try:
            import albumentations  # noqa: F401
        except ImportError:
            with_augmentation = False
        else:
            with_augmentation = True
    augmentation = (
        [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}, {"_target_": "albumentations.VerticalFlip", "p": 0.5}]
        if with_augmentation
        else []
    )
    files.update(_write_configs(folder, files, augmentation))
    return files


def _scene_transform() -> Affine:
    """The image grid: `TILES` x `TILES` Web Mercator tiles at `ZOOM` around `CENTRE`."""
    col0, row0 = tile_of(*CENTRE, ZOOM)
    return T.web_mercator_transform(ZOOM, col0 - TILES // 2, row0 - TILES // 2)


def _write_rasters(folder: Path, seed: int) -> dict[str, Path]:
    """The image (GeoTIFF and MBTiles) and the colour mask on its own EPSG:4326 grid."""
    size = TILES * T.TILE
    transform = _scene_transform()
    rows, cols = np.mgrid[0:size, 0:size]
    xs, ys = _apply(transform, cols + 0.5, rows + 0.5)
    lon, lat = _mercator_to_lonlat(np.asarray(xs), np.asarray(ys))
    files: dict[str, Path] = {}
    files["image"] = _written(
        folder / "image.tif",
        lambda temp: T.write_raster(temp, render_image(lon, lat, seed), crs="EPSG:3857", transform=transform),
    )
    files["mbtiles"] = _written(
        folder / "image.mbtiles", lambda temp: T.write_mbtiles(files["image"], temp), new_file=True
    )

    # The mask: the same landscape on its own EPSG:4326 grid, 2 % larger than the image.
    with rasterio.open(files["image"]) as src:
        left, bottom, right, top = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    pad_x, pad_y = 0.02 * (right - left), 0.02 * (top - bottom)
    res_x, res_y = MASK_RESOLUTION
    mask_transform = Affine(res_x, 0, left - pad_x, 0, -res_y, top + pad_y)
    width = math.ceil((right - left + 2 * pad_x) / res_x)
    height = math.ceil((top - bottom + 2 * pad_y) / res_y)
    mrows, mcols = np.mgrid[0:height, 0:width]
    mlon, mlat = _apply(mask_transform, mcols + 0.5, mrows + 0.5)
    classes = landscape(np.asarray(mlon), np.asarray(mlat))["classes"]
    palette = np.array([colour for _, _, colour in CLASSES], dtype=np.uint8)
    files["mask"] = _written(
        folder / "mask.tif",
        lambda temp: T.write_raster(
            temp, palette[classes].transpose(2, 0, 1), crs="EPSG:4326", transform=mask_transform
        ),
    )
    return files


def _write_windows(folder: Path, seed: int) -> dict[str, Path]:
    """Windows: an 8 x 8 grid of offsets (CSV) and points of interest (GeoPackage; four of them outside)."""
    size = TILES * T.TILE
    grid = np.arange(0, size - PATCH_SIZE + 1, PATCH_SIZE)
    row_off, col_off = np.meshgrid(grid, grid, indexing="ij")
    files: dict[str, Path] = {}
    files["windows_csv"] = _written(
        folder / "windows.csv",
        lambda temp: T.write_windows_table(temp, row_off.ravel().tolist(), col_off.ravel().tolist()),
    )
    rng = np.random.default_rng(seed + 1)
    pr = np.concatenate([rng.uniform(0, size, 21), [10, size - 5, size / 2, -3 * size]])
    pc = np.concatenate([rng.uniform(0, size, 21), [12, size / 3, size - 8, size / 2]])
    pxs, pys = _apply(_scene_transform(), pc, pr)
    plon, plat = _mercator_to_lonlat(np.asarray(pxs), np.asarray(pys))
    files["windows_gpkg"] = _written(
        folder / "windows.gpkg",
        lambda temp: T.write_points(temp, plon.tolist(), plat.tolist(), crs="EPSG:4326", layer="training_windows"),
        new_file=True,
    )
    return files


def _write_configs(folder: Path, files: Mapping[str, Path], augmentation: list[dict[str, Any]]) -> dict[str, Path]:
    """``config.yaml`` (MBTiles, CSV windows), ``config-vector.yaml`` (GeoTIFF, GeoPackage points) and the
    planned windows with ``config-split.yaml`` (train and val from one table)."""
    target = "crossgeo.torch.MBTilesCropsGeoTifMaskDataset"
    data_loader = {"shuffle": True, "num_workers": 0}
    config = {
        "_target_": target,
        "image_mbtiles_path": str(files["mbtiles"].resolve()),
        "mask_path": str(files["mask"].resolve()),
        "crops_path": str(files["windows_csv"].resolve()),
        "patch_size": PATCH_SIZE,
        "selected_bands": [1, 2, 3],
        "color_map": COLOR_MAP,
        "window_index_cache": str((folder / "windows.index.csv").resolve()),
        "augmentation_list": augmentation,
        "data_loader": data_loader,
    }
    header = (
        "# crossgeo demo scene (synthetic landscape; classes: "
        + ", ".join(f"{c} {n}" for c, n, _ in CLASSES)
        + ").\n# Pixels whose mask colour is not in color_map (black) are class 0.\n"
    )
    written = {"config": _written(folder / "config.yaml", lambda temp: temp.write_text(header + _yaml_config(config)))}
    vector = {
        "_target_": target,
        "image_mbtiles_path": str(files["image"].resolve()),
        "mask_path": str(files["mask"].resolve()),
        "crops_path": str(files["windows_gpkg"].resolve()),
        "crops_layer": "training_windows",
        "patch_size": PATCH_SIZE,
        "color_map": COLOR_MAP,
        "augmentation_list": augmentation,
        "data_loader": data_loader,
    }
    written["config_vector"] = _written(
        folder / "config-vector.yaml", lambda temp: temp.write_text(header + _yaml_config(vector))
    )
    return {**written, **_write_split(folder, config, header)}


def _write_split(folder: Path, config: Mapping[str, Any], header: str) -> dict[str, Path]:
    """Windows as data: grid candidates, leak-free splits and a class-balanced choice in each, with
    sampling weights - what `crossgeo windows` writes with SPLIT_WINDOWS_COMMAND's options."""
    from crossgeo.planning import DEFAULT_SPLITS, plan_windows

    plan = plan_windows(
        {k: v for k, v in config.items() if k in SPLIT_PLAN_KEYS},
        stride=PATCH_SIZE // 2,
        balanced=SPLIT_WINDOWS,
        splits=DEFAULT_SPLITS,
        block=2 * PATCH_SIZE,
        seed=0,
        weights=True,
        class_names=CLASS_NAMES,
    )
    windows = _written(folder / "windows-split.parquet", lambda temp: plan.windows.to_parquet(temp, index=False))
    split_config = {k: v for k, v in config.items() if k != "window_index_cache"}
    split_config["crops_path"] = str(windows.resolve())
    split_text = (
        header
        + "# One windows table (windows-split.parquet) serves both datasets through its split column.\n"
        + _yaml_config(
            {**copy.deepcopy(split_config), "split": "train"},
            val_dataset={
                **copy.deepcopy(split_config),
                "augmentation_list": [],
                "data_loader": {"shuffle": False, "num_workers": 0},
                "split": "val",
            },
        )
    )
    config_split = _written(folder / "config-split.yaml", lambda temp: temp.write_text(split_text))
    return {"windows_split": windows, "config_split": config_split}


# --------------------------------------------------------------------------- training

FRAMEWORKS = ("torch", "tensorflow")
"""Frameworks `train_tiny_model` can use."""

StepCallback = Callable[[int, float, float, int], None]
"""Called after each training step with (step, loss, pixel accuracy, patches in the batch)."""


@attrs.frozen
class TrainingResult:
    """What `train_tiny_model` reports: the first and last batch loss and the last batch's pixel accuracy."""

    framework: str
    steps: int
    first_loss: float
    loss: float
    pixel_accuracy: float
    model: Any = attrs.field(default=None, eq=False, repr=False)
    """The trained model (a torch ``nn.Module`` or a Keras model), for `predict_scene`."""


def train_tiny_model(
    framework: str,
    sampler: Any,
    *,
    steps: int,
    batch_size: int,
    n_classes: int,
    augmentation_list: Sequence[Any] | None = None,
    on_step: StepCallback | None = None,
) -> TrainingResult:
    """Train a tiny fully convolutional network on ``sampler``'s patches for ``steps`` batches.

    A smoke test of the whole path (sampler -> adapter -> model) rather than a model worth
    keeping: two 3x3 convolutions and a 1x1 classifier, Adam at 0.01, cross-entropy,
    seeded with 0. ``framework`` is "torch" (through `crossgeo.torch.make_dataloader`) or
    "tensorflow" (through `crossgeo.tensorflow.make_dataset`); the framework is imported
    here, so an ``ImportError`` means it is missing or broken.
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}.")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}.")
    train = _train_torch if framework == "torch" else _train_tensorflow
    first, last, accuracy, model = train(sampler, augmentation_list, steps, batch_size, n_classes, on_step)
    return TrainingResult(framework, steps, first, last, accuracy, model)


def predict_scene(
    result: TrainingResult, sampler: Any, out_path: str | os.PathLike[str], *, n_classes: int
) -> tuple[Prediction, Evaluation]:
    """Predict ``sampler``'s whole image with the trained model and evaluate it against the sampler's mask.

    Through `crossgeo.torch.predict_raster` or `crossgeo.keras.predict_raster` (the framework
    the model was trained with), with the sampler's patch size, bands and image dtype, so
    the model sees images prepared as in training; then `crossgeo.evaluate` with the
    sampler's colour map. Returns the `crossgeo.predict.Prediction` and its `crossgeo.evaluation.Evaluation`.
    """
    from crossgeo.evaluation import evaluate

    if result.model is None:
        raise ValueError("the training result holds no model; train one with train_tiny_model first.")
    if result.framework == "torch":
        from crossgeo.torch import predict_raster
    else:
        from crossgeo.keras import predict_raster
    prediction = predict_raster(
        result.model,
        sampler.image_path,
        out_path,
        patch_size=sampler.patch_size,
        selected_bands=sampler.selected_bands,
        image_dtype=str(sampler.image_dtype),
        n_classes=n_classes,
        progress=False,
        overwrite=True,
    )
    metrics = evaluate(prediction.path, sampler.mask_path, n_classes=n_classes, color_map=sampler.color_map)
    return prediction, metrics


def _train_torch(
    sampler: Any,
    augmentation_list: Sequence[Any] | None,
    steps: int,
    batch_size: int,
    n_classes: int,
    on_step: StepCallback | None,
) -> tuple[float, float, float, Any]:
    import torch
    from torch import nn

    from crossgeo.torch import PatchDataset, make_dataloader

    dataset = PatchDataset(sampler, augmentation_list=augmentation_list, seed=0)
    torch.manual_seed(0)
    loader = make_dataloader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
    channels = int(dataset[0]["image"].shape[0])
    model = nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, n_classes, 1),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    first = last = accuracy = float("nan")
    step = 0
    while step < steps:
        for batch in loader:
            x, y = batch["image"], batch["mask"]
            logits = model(x)
            loss = loss_fn(logits, y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            last = float(loss.item())
            first = last if step == 0 else first
            accuracy = float((logits.argmax(1) == y).float().mean())
            step += 1
            if on_step is not None:
                on_step(step, last, accuracy, len(x))
            if step >= steps:
                break
    return first, last, accuracy, model


def _train_tensorflow(
    sampler: Any,
    augmentation_list: Sequence[Any] | None,
    steps: int,
    batch_size: int,
    n_classes: int,
    on_step: StepCallback | None,
) -> tuple[float, float, float, Any]:
    import tensorflow as tf

    from crossgeo.tensorflow import make_dataset

    dataset = make_dataset(sampler, batch_size=batch_size, shuffle=True, seed=0, augmentation_list=augmentation_list)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            tf.keras.layers.Conv2D(n_classes, 1),
        ]
    )
    optimiser = tf.keras.optimizers.Adam(0.01)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    first = last = accuracy = float("nan")
    step = 0
    while step < steps:
        for batch in dataset:
            x, y = batch[0], batch[1]
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = loss_fn(y, logits)
            grads = tape.gradient(loss, model.trainable_variables)
            optimiser.apply_gradients(zip(grads, model.trainable_variables))
            last = float(loss.numpy())
            first = last if step == 0 else first
            accuracy = float(tf.reduce_mean(tf.cast(tf.argmax(logits, -1) == y, tf.float32)).numpy())
            step += 1
            if on_step is not None:
                on_step(step, last, accuracy, int(x.shape[0]))
            if step >= steps:
                break
    return first, last, accuracy, model
