"""tf.data pipelines over a `crossgeo.PatchSampler`.

`make_dataset` builds::

    epoch -> window order (seeded permutation) -> shard (tf.distribute) -> batch (window
    indices) -> map (parallel, one tf.numpy_function reads and stacks a batch) -> convert
    to float32 / int64 (in the graph) -> prefetch

Each patch goes through `crossgeo.augment.to_compact_inputs` - the function behind the
torch and Keras adapters' ``to_model_inputs`` - so for the same window, seed and epoch every
framework gets the same numbers. The map runs on tf.data's thread pool, a whole batch per
call: per-element tf.data work (a Python call, shape checks, the copy into the batch) is
paid once per batch, and the arrays handed over become the batch without a copy. rasterio
releases the GIL while GDAL reads and decompresses, so parallel calls overlap; every thread
reads through its own rasterio handles (the sampler opens them per process and thread), each
with its own share of GDAL's block cache - a cache meant to hold a scene's blocks (a warm
second epoch) must hold them once per concurrent call.

Example - a tiny segmentation model::

    import keras
    from crossgeo.tensorflow import make_dataset

    train = make_dataset(
        {"image_mbtiles_path": "imagery.mbtiles", "mask_path": "mask.tif",
         "crops_path": "windows.csv", "patch_size": 256, "selected_bands": [1, 2, 3]},
        batch_size=8, shuffle=True, seed=42,
        augmentation_list=[{"_target_": "albumentations.HorizontalFlip", "p": 0.5}],
    )
    model = keras.Sequential([
        keras.Input((256, 256, 3)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(2, 1),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train, epochs=3)   # each epoch is reshuffled: epoch 0, 1, 2

Multi-device (each replica decodes only its own windows)::

    strategy = tf.distribute.MirroredStrategy()
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: make_dataset(sampler, batch_size=8, shuffle=True, seed=42, input_context=ctx)
    )
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    import tensorflow as tf
except ImportError as error:  # pragma: no cover - exercised only without tensorflow
    if error.name != "tensorflow":
        raise  # TensorFlow is installed but failed to import: show the real error
    raise ImportError(
        "crossgeo.tensorflow needs TensorFlow; in a clone of crossgeo install it with: pip install '.[tensorflow]'"
    ) from error

from crossgeo.augment import (
    PerThreadAugmentation,
    build_augmentation,
    decode_type,
    epoch_order,
    mask_dtype,
    scale_image,
    to_compact_inputs,
    to_model_inputs,
)
from crossgeo.config import check_seed, resolve_source
from crossgeo.errors import ConfigError, OptionError
from crossgeo.sampler import PatchSampler, report_skipped, require_windows, resolve_weights
from crossgeo.scenes import SceneSampler

__all__ = ["make_dataset"]


def _random_seed() -> int:
    return int(np.random.default_rng().integers(2**32))


def _output_shapes(
    sampler: PatchSampler | SceneSampler, augmentation: Any | None, channels_last: bool
) -> tuple[tuple[int, ...], ...]:
    """(image shape, mask shape) of one element, found on a blank patch (no read)."""
    size = sampler.patch_size
    bands = len(sampler.selected_bands)
    steps = getattr(sampler, "time_steps", None)  # a time series: (T, ...) images
    dates: tuple[int, ...] = () if steps is None else (int(steps),)
    if augmentation is None:
        image_shape: tuple[int, ...] = (*dates, size, size, bands) if channels_last else (*dates, bands, size, size)
        return image_shape, (size, size)
    from crossgeo.sampler import Patch

    blank = Patch(
        image=np.zeros((*dates, bands, size, size), dtype=sampler.image_dtype),
        mask=np.zeros((size, size), dtype=np.int64),
        row_off=0,
        col_off=0,
        index=0,
    )
    image, mask = to_model_inputs(blank, copy.deepcopy(augmentation), seed=0, channels_last=channels_last)
    return tuple(image.shape), tuple(mask.shape)


def make_dataset(
    source: PatchSampler | SceneSampler | Mapping[str, Any],
    *,
    batch_size: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    augmentation_list: Any = None,
    channels_last: bool = True,
    drop_remainder: bool = False,
    with_metadata: bool = False,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    input_context: tf.distribute.InputContext | None = None,
    epoch: int | tf.Variable | None = None,
    allowed_targets: tuple[str, ...] = (),
    compact: bool = True,
    weights: Any = None,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(image, mask)`` patches, ready for ``model.fit``.

    Args:
        source: A `crossgeo.PatchSampler` or `crossgeo.SceneSampler`, or a mapping with the original
            ``MBTilesCropsGeoTifMaskDataset`` keys (a YAML ``train_dataset`` block;
            ``_target_`` is ignored). The mapping's ``augmentation_list``, ``seed``,
            ``return_metadata`` and ``data_loader`` (``batch_size``, ``shuffle``,
            ``drop_last``) are used where the matching keyword argument is left at its default.
        batch_size: Batch the patches (the per-replica batch when ``input_context`` is
            given); None yields single patches.
        shuffle: Visit the windows in a new random order every epoch.
        seed: Makes the window order and the augmentations reproducible: both depend
            only on ``(seed, epoch, window index)``, as in the torch adapter.
        augmentation_list: albumentations transforms or ``_target_`` dicts (see
            `crossgeo.augment.build_augmentation`; ``ToTensorV2`` is dropped).
        channels_last: Images (H, W, C) (default, Keras) or (C, H, W).
        drop_remainder: Drop a last batch smaller than ``batch_size``.
        with_metadata: Yield ``(image, mask, {"row_off", "col_off", "index"})`` (int64
            scalars/vectors) instead of ``(image, mask)``.
        num_parallel_calls: Batches (single patches when ``batch_size`` is None) decoded
            concurrently (``tf.data.AUTOTUNE`` or an int). Output order never depends on it.
        input_context: From ``strategy.distribute_datasets_from_function``: this input
            pipeline takes every ``num_input_pipelines``-th window of the epoch's order,
            starting at ``input_pipeline_id``, before anything is read. All pipelines
            compute the same order (shuffling needs a ``seed``), so they are disjoint and
            together cover every window; the shards change every epoch.
        epoch: None (default): the first pass over the dataset is epoch 0 and every new
            iteration (each ``model.fit`` epoch) counts one up. An int: every pass is that
            epoch. A ``tf.Variable``: its value when a pass starts (set it from a callback).
        allowed_targets: Module prefixes of your own transform classes (albumentations
            subclasses) ``_target_`` may name; code only (see `crossgeo.augment`).
        compact: True (default): the map hands over the image in its stored dtype (without an
            augmentation) and the mask in the narrowest integer type holding
            ``0..n_classes-1`` and ``mask_fill_value``, converted to float32 / int64 inside
            the graph once per batch. False: the map converts with numpy and hands over
            float32 / int64. The output is the same bit for bit either way; compact costs
            less CPU per patch. Unlike the torch adapter's ``compact`` (which changes what
            ``dataset[i]`` returns), it changes nothing visible, hence the default. Its one
            failure: an augmentation writing mask values the narrow type cannot hold raises
            a ``ConfigError``; pass ``compact=False`` there.
        weights: Weighted sampling: each epoch draws ``len(sampler)`` windows with
            replacement in proportion to them (shuffling is implied) - the same indices in
            the same order as the torch and Keras adapters for a seed and epoch. One
            non-negative number per window, or ``"weight"`` for the windows table's
            ``weight`` column (`crossgeo.window_weights`).

    Returns:
        Elements ``image`` float32 (H, W, C) (or (C, H, W)) and ``mask`` int64 (H, W),
        batched when ``batch_size`` is set; all shapes are static except the batch.
    """
    sampler, options = resolve_source(source, "make_dataset")
    require_windows(sampler, "make_dataset")
    draw_weights = resolve_weights(weights, sampler, "make_dataset")
    if augmentation_list is None:
        augmentation_list = options.get("augmentation_list")
    if seed is None:
        seed = options.get("seed")
    if batch_size is None:
        batch_size = options.get("batch_size")
    shuffle = bool(shuffle or options.get("shuffle", False))
    drop_remainder = bool(drop_remainder or options.get("drop_last", False))
    with_metadata = bool(with_metadata or options.get("return_metadata", False))

    seed = check_seed(seed)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))):
        raise OptionError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    pipelines, pipeline_id = 1, 0
    if input_context is not None:
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        if (shuffle or draw_weights is not None) and seed is None and pipelines > 1:
            raise ConfigError(
                "make_dataset(shuffle=True, input_context=...) needs a seed: every input pipeline must "
                "compute the same window order, or their shards would overlap. Pass seed=<int>."
            )
    base_seed = int(seed) if seed is not None else _random_seed()

    if not isinstance(compact, bool):
        raise OptionError(f"compact must be true or false, got {compact!r}.")
    augmentation = build_augmentation(augmentation_list, allowed_targets=allowed_targets)
    augmentations = PerThreadAugmentation(augmentation)
    # The map's output types are static: an augmentation may or may not make the image float,
    # so with one each patch is scaled to float32 as it is stacked (the mask stays compact);
    # an image that is not scaled (image_dtype native) comes float32 from to_compact_inputs.
    compact_image = augmentation is None and sampler.unit_scale
    stack_type = sampler.image_dtype if compact_image else np.dtype(np.float32)
    image_type = stack_type if compact else np.dtype(np.float32)
    fill = sampler.mask_fill_value
    mask_type = mask_dtype(min(0, fill), max(sampler.n_classes - 1, fill, 1)) if compact else np.dtype(np.int64)
    read_mask_type = decode_type(mask_type, augmentation)
    image_shape, mask_shape = _output_shapes(sampler, augmentation, channels_last)
    n = len(sampler)

    # --- epoch -> this pipeline's window order, as (index, epoch) pairs -------------
    def order(epoch_value: np.ndarray) -> np.ndarray:
        if draw_weights is not None:
            indices = epoch_order(n, base_seed, int(epoch_value), weights=draw_weights)
        else:
            indices = epoch_order(n, base_seed, int(epoch_value)) if shuffle else np.arange(n, dtype=np.int64)
        return indices[pipeline_id::pipelines]

    if epoch is None:
        passes = _PassCounter()
        epochs = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(
            lambda _: tf.ensure_shape(tf.numpy_function(passes.next, [], tf.int64, stateful=True), [])
        )
    elif isinstance(epoch, tf.Variable):
        variable = epoch
        epochs = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(
            lambda _: tf.cast(variable.read_value(), tf.int64)
        )
    elif isinstance(epoch, (int, np.integer)) and not isinstance(epoch, bool) and epoch >= 0:
        epochs = tf.data.Dataset.from_tensors(tf.constant(int(epoch), tf.int64))
    else:
        raise OptionError(f"epoch must be None, a non-negative int or a tf.Variable, got {epoch!r}.")

    def windows_of(epoch_value: tf.Tensor) -> tf.data.Dataset:
        indices = tf.ensure_shape(tf.numpy_function(order, [epoch_value], tf.int64, stateful=False), [None])
        return tf.data.Dataset.from_tensor_slices((indices, tf.fill(tf.shape(indices), epoch_value)))

    dataset = epochs.flat_map(windows_of)

    # --- decode a batch of windows: the shared core function, on tf.data's threads ------
    tally = _SkipTally(sampler, len(range(pipeline_id, n, pipelines)))

    def load(indices: np.ndarray, epoch_values: np.ndarray) -> tuple[np.ndarray, ...]:
        """Read the patches of ``indices`` (a vector: one batch; a scalar: one patch) into fresh arrays."""
        single = indices.ndim == 0
        indices, epoch_values = np.atleast_1d(indices), np.atleast_1d(epoch_values)
        count = len(indices)
        images = _aligned_empty((count, *image_shape), stack_type)
        masks = _aligned_empty((count, *mask_shape), mask_type)
        offsets = np.empty((2, count), dtype=np.int64)
        augmentation = augmentations.get()
        for k, (index, epoch_value) in enumerate(zip(indices.tolist(), epoch_values.tolist())):
            tally.started(epoch_value)
            patch = sampler.get(index, mask_dtype=read_mask_type)
            image, mask = to_compact_inputs(
                patch, augmentation, seed=base_seed, epoch=epoch_value, channels_last=channels_last, mask_type=mask_type
            )
            if stack_type.kind == "f":
                scale_image(image, out=images[k])  # float already, or an augmentation left it integer: scale it
            else:
                images[k] = image
            masks[k] = mask
            offsets[:, k] = patch.row_off, patch.col_off
            tally.finished(epoch_value)
        if image_type != stack_type:
            images = scale_image(images, out=_aligned_empty(images.shape, image_type))
        if single:
            return images[0], masks[0], offsets[0, 0], offsets[1, 0]
        return images, masks, offsets[0], offsets[1]

    batch_shape: list[int | None] = [] if batch_size is None else [batch_size if drop_remainder else None]

    def decode(index: tf.Tensor, epoch_value: tf.Tensor) -> Any:
        image, mask, row_off, col_off = tf.numpy_function(
            load,
            [index, epoch_value],
            (tf.as_dtype(image_type), tf.as_dtype(mask_type), tf.int64, tf.int64),
            stateful=False,
        )
        image = tf.ensure_shape(image, [*batch_shape, *image_shape])
        mask = tf.ensure_shape(mask, [*batch_shape, *mask_shape])
        if with_metadata:
            metadata = {
                "row_off": tf.ensure_shape(row_off, batch_shape),
                "col_off": tf.ensure_shape(col_off, batch_shape),
                "index": index,
            }
            return image, mask, metadata
        return image, mask

    if batch_size is not None:
        dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
    dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls, deterministic=True)
    if compact:
        dataset = dataset.map(_from_compact, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    count = math.ceil((n - pipeline_id) / pipelines) if n > pipeline_id else 0
    if batch_size is not None:
        count = count // batch_size if drop_remainder else math.ceil(count / batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(count))


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """``np.empty`` on a 64-byte boundary: tf.numpy_function then wraps the array instead of copying it.

    (numpy's large allocations sit 16 bytes past a page boundary; TensorFlow copies arrays that
    are not aligned for its kernels - 13 MB per float32 batch of 16 RGB 256 x 256 patches.)
    """
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


_ALIGN = 64
_SCALE = {tf.uint8: 255.0, tf.uint16: 65535.0}


def _from_compact(image: tf.Tensor, mask: tf.Tensor, *metadata: Any) -> tuple[Any, ...]:
    """In the graph, once per batch: float32 image (uint8 / 255, uint16 / 65535) and int64 mask.

    Elementwise in float32, as `crossgeo.augment.scale_image` computes it, so the numbers equal
    the ``compact=False`` pipeline's bit for bit.
    """
    scale = _SCALE.get(image.dtype)
    image = tf.cast(image, tf.float32)
    if scale is not None:
        image = image / tf.constant(scale, tf.float32)
    return (image, tf.cast(mask, tf.int64), *metadata)


class _SkipTally:
    """Says at the end of each epoch how many samples came from a replacement window.

    With ``on_read_error="skip"`` the sampler logs every unreadable window as it meets it;
    the thread that decodes an epoch's last window also logs the epoch's total.
    """

    def __init__(self, sampler: PatchSampler | SceneSampler, per_epoch: int) -> None:
        self.sampler = sampler
        self.per_epoch = per_epoch
        self._lock = threading.Lock()
        self._epochs: dict[int, list[int]] = {}  # epoch -> [windows done, sampler.skipped at start]

    def started(self, epoch: int) -> None:
        with self._lock:
            self._epochs.setdefault(epoch, [0, self.sampler.skipped])

    def finished(self, epoch: int) -> None:
        with self._lock:
            state = self._epochs[epoch]
            state[0] += 1
            if state[0] < self.per_epoch:
                return
            del self._epochs[epoch]
            skipped = self.sampler.skipped - state[1]
        report_skipped(epoch, skipped)


class _PassCounter:
    """Counts the passes over a dataset (thread-safe): 0, 1, 2, ..."""

    def __init__(self) -> None:
        self._next = 0
        self._lock = threading.Lock()

    def next(self) -> np.ndarray:
        with self._lock:
            value = self._next
            self._next += 1
        return np.asarray(value, dtype=np.int64)
