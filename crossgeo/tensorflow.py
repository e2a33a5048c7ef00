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
reads through its own rasterio handles; told the windows ahead (`crossgeo.loading.ReadPlans`),
the threads share one store of a tiled GeoTIFF or MBTiles image's decoded tiles, else each keeps
its own share of GDAL's block cache (to hold a scene's blocks, once per concurrent call).

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

import math
from collections.abc import Mapping
from functools import partial
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

from crossgeo.augment import PerThreadAugmentation, scale_image, to_compact_inputs
from crossgeo.loading import LoaderPlan, PassCounter, ReadPlans, SkipTally, plan_loader, require_shared_seed
from crossgeo.options import check_bool, check_int
from crossgeo.sampler import PatchSampler
from crossgeo.scenes import SceneSampler

__all__ = ["make_dataset"]


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
    plan = plan_loader(
        source,
        where="make_dataset",
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        augmentation_list=augmentation_list,
        allowed_targets=allowed_targets,
        drop_remainder=drop_remainder,
        with_metadata=with_metadata,
        weights=weights,
    )
    context = input_context
    pipelines, pipeline_id = (1, 0) if context is None else (context.num_input_pipelines, context.input_pipeline_id)
    if plan.shuffle or plan.weights is not None:
        require_shared_seed(plan.seed, pipelines, "make_dataset(shuffle=True, input_context=...)", "Pass seed=<int>.")
    compact = check_bool(compact, "compact")
    shard = len(range(pipeline_id, plan.n_windows, pipelines))
    order = partial(plan.order, rank=pipeline_id, replicas=pipelines)  # epoch -> this pipeline's window order
    plans = ReadPlans.of(plan, order, shard, None if num_parallel_calls == tf.data.AUTOTUNE else num_parallel_calls)
    load = _BatchReader(plan, compact=compact, channels_last=channels_last, shard=shard, plans=plans)

    def windows_of(epoch_value: tf.Tensor) -> tf.data.Dataset:
        indices = tf.ensure_shape(tf.numpy_function(order, [epoch_value], tf.int64, stateful=False), [None])
        return tf.data.Dataset.from_tensor_slices((indices, tf.fill(tf.shape(indices), epoch_value)))

    dataset = _epochs(epoch).flat_map(windows_of)

    # --- decode a batch of windows: the shared core function, on tf.data's threads ------
    size = plan.batch_size
    batch_shape: list[int | None] = [] if size is None else [size if plan.drop_remainder else None]

    def decode(index: tf.Tensor, epoch_value: tf.Tensor) -> Any:
        image, mask, row_off, col_off = tf.numpy_function(
            load,
            [index, epoch_value],
            (tf.as_dtype(load.image_type), tf.as_dtype(load.mask_type), tf.int64, tf.int64),
            stateful=False,
        )
        image = tf.ensure_shape(image, [*batch_shape, *load.image_shape])
        mask = tf.ensure_shape(mask, [*batch_shape, *load.mask_shape])
        if plan.with_metadata:
            metadata = {
                "row_off": tf.ensure_shape(row_off, batch_shape),
                "col_off": tf.ensure_shape(col_off, batch_shape),
                "index": index,
            }
            return image, mask, metadata
        return image, mask

    if size is not None:
        dataset = dataset.batch(size, drop_remainder=plan.drop_remainder)
    dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls, deterministic=True)
    if compact:
        dataset = dataset.map(_from_compact, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset.apply(tf.data.experimental.assert_cardinality(plan.batches(shard)))


def _epochs(epoch: int | tf.Variable | None) -> tf.data.Dataset:
    """A one-element dataset: the epoch of a pass, read each time a pass starts (see `make_dataset`'s ``epoch``)."""
    if epoch is None:
        passes = PassCounter()
        return tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(
            lambda _: tf.ensure_shape(tf.numpy_function(passes.next, [], tf.int64, stateful=True), [])
        )
    if isinstance(epoch, tf.Variable):
        variable = epoch
        return tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(
            lambda _: tf.cast(variable.read_value(), tf.int64)
        )
    # None, a tf.Variable or a non-negative int (checked as every epoch option is: crossgeo.options.check_int)
    return tf.data.Dataset.from_tensors(tf.constant(check_int(epoch, "epoch", 0), tf.int64))


class _BatchReader:
    """``load(indices, epochs)``: the patches of one batch (or one patch), stacked, for ``tf.numpy_function``.

    Runs on tf.data's threads, each with its own augmentation copy; every patch goes through
    `crossgeo.augment.to_compact_inputs` with the plan's seed, mask type and decode type.
    """

    def __init__(self, plan: LoaderPlan, *, compact: bool, channels_last: bool, shard: int, plans: ReadPlans) -> None:
        sampler = plan.sampler
        self.plan, self.channels_last = plan, channels_last
        self.augmentations = PerThreadAugmentation(plan.augmentation)
        # The map's output types are static: an augmentation may or may not make the image float,
        # so with one each patch is scaled to float32 as it is stacked (the mask stays compact);
        # an image that is not scaled (image_dtype native) comes float32 from to_compact_inputs.
        compact_image = plan.augmentation is None and sampler.unit_scale
        self.stack_type = sampler.image_dtype if compact_image else np.dtype(np.float32)
        self.image_type = self.stack_type if compact else np.dtype(np.float32)
        self.mask_type = plan.mask_type if compact else np.dtype(np.int64)
        self.read_mask_type = plan.decode_type(compact)
        self.image_shape, self.mask_shape = plan.output_shapes(channels_last)
        self.tally, self.plans = SkipTally(sampler, shard), plans  # plans: the sampler told the windows ahead

    def __call__(self, indices: np.ndarray, epoch_values: np.ndarray) -> tuple[np.ndarray, ...]:
        """Read the patches of ``indices`` (a vector: one batch; a scalar: one patch) into fresh arrays."""
        single = indices.ndim == 0
        indices, epoch_values = np.atleast_1d(indices), np.atleast_1d(epoch_values)
        count, stack_type, tally = len(indices), self.stack_type, self.tally
        images = _aligned_empty((count, *self.image_shape), stack_type)
        masks = _aligned_empty((count, *self.mask_shape), self.mask_type)
        offsets = np.empty((2, count), dtype=np.int64)
        augmentation = self.augmentations.get()
        self.plans.reading(int(epoch_values[0]), count)
        for k, (index, epoch_value) in enumerate(zip(indices.tolist(), epoch_values.tolist())):
            tally.started(epoch_value)
            patch = self.plan.sampler.get(index, mask_dtype=self.read_mask_type)
            image, mask = to_compact_inputs(
                patch,
                augmentation,
                seed=self.plan.base_seed,
                epoch=epoch_value,
                channels_last=self.channels_last,
                mask_type=self.mask_type,
            )
            if stack_type.kind == "f":
                scale_image(image, out=images[k])  # float already, or an augmentation left it integer: scale it
            else:
                images[k] = image
            masks[k] = mask
            offsets[:, k] = patch.row_off, patch.col_off
            tally.finished(epoch_value)
        if self.image_type != stack_type:
            images = scale_image(images, out=_aligned_empty(images.shape, self.image_type))
        if single:
            return images[0], masks[0], offsets[0, 0], offsets[1, 0]
        return images, masks, offsets[0], offsets[1]


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
