"""A Keras 3 ``PyDataset`` over a `crossgeo.PatchSampler` (any Keras backend).

Batches are numpy arrays, made by `crossgeo.augment.to_model_inputs` - the function
the torch and tf.data adapters call - so a window gives the same numbers everywhere. This
module imports no TensorFlow: it works on the TensorFlow, JAX and torch backends.

Example::

    import keras
    from crossgeo.keras import PatchPyDataset

    train = PatchPyDataset(config, batch_size=8, shuffle=True, seed=42, workers=2)
    model.fit(train, epochs=3, shuffle=False)   # crossgeo already shuffles the windows

``workers`` threads (or processes with ``use_multiprocessing=True``) build batches in
parallel; each thread reads through its own rasterio handles and augmentation copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

try:
    import keras
except ImportError as error:  # pragma: no cover - exercised only without keras
    if error.name != "keras":
        raise  # Keras is installed but its backend (e.g. jax) is missing or broken: show the real error
    raise ImportError(
        "crossgeo.keras needs Keras 3; in a clone of crossgeo install it with: pip install '.[tensorflow]' "
        "(or install keras with the JAX or torch backend)"
    ) from error

if not hasattr(keras.utils.PyDataset, "on_epoch_begin"):  # pragma: no cover - Keras < 3.5
    raise ImportError(
        f"crossgeo.keras needs Keras >= 3.5 (PyDataset.on_epoch_begin marks where an epoch starts); "
        f"Keras {keras.__version__} is installed. Upgrade it with: pip install 'keras>=3.5'"
    )

from crossgeo.augment import PerThreadAugmentation, from_compact, scale_image, to_compact_inputs, to_model_inputs
from crossgeo.errors import ConfigError, OptionError
from crossgeo.loading import ReadPlans, check_epoch, plan_loader, read_ahead, report_skipped
from crossgeo.options import check_bool
from crossgeo.readahead import resolve_read_threads
from crossgeo.sampler import PatchSampler
from crossgeo.scenes import SceneSampler

__all__ = ["PatchPyDataset"]


class PatchPyDataset(keras.utils.PyDataset):
    """Batches ``(x (B, H, W, C) float32, y (B, H, W) int64)`` of patches for ``model.fit``.

    Args:
        source: A `crossgeo.PatchSampler` or `crossgeo.SceneSampler`, or a mapping with the original
            ``MBTilesCropsGeoTifMaskDataset`` keys (its ``augmentation_list``, ``seed`` and
            ``data_loader.shuffle`` / ``data_loader.drop_last`` apply where the keyword is
            left at its default).
        batch_size: Patches per batch (None: the mapping's ``data_loader.batch_size``).
        shuffle: A new window order every epoch (``on_epoch_end`` moves to the next epoch).
        seed: Makes window order and augmentations depend only on (seed, epoch, window
            index) - the same numbers as the torch and tf.data adapters.
        augmentation_list: albumentations transforms or ``_target_`` dicts.
        workers: Threads (or processes) building batches in parallel (Keras option).
        use_multiprocessing: Use processes instead of threads (Keras option).
        max_queue_size: Batches prepared ahead (Keras option).
        drop_remainder: Leave out a last batch smaller than ``batch_size``.
        epoch: The epoch the dataset starts at (e.g. when resuming training).
        allowed_targets: Module prefixes of your own transform classes (albumentations
            subclasses) ``_target_`` may name; code only (see `crossgeo.augment`).
        compact: True (default): stack each batch in the stored image dtype and a narrow
            mask type and convert the whole batch to float32 / int64 at once (fewer
            temporaries per patch: 1.6x the batches/s of ``compact=False`` on a warm cache
            here); the batches are bit-identical either way, so nothing visible changes. Its
            one failure: an augmentation writing mask values the narrow type cannot hold
            raises a ``ConfigError``; pass ``compact=False`` there.
        weights: Weighted sampling: each epoch draws ``len(sampler)`` windows with
            replacement in proportion to them (shuffling is implied) - the same indices in
            the same order as the torch and tf.data adapters for a seed and epoch. One
            non-negative number per window, or ``"weight"`` for the windows table's
            ``weight`` column (`crossgeo.window_weights`).
        read_threads: Threads reading each batch's patches concurrently, delivered in order (the
            batch is the one a single reader gives). None, 0 or 1: one reader (`resolve_read_threads`);
            2 pays where the training step leaves a core idle.

    Keras' own ``model.fit(shuffle=True)`` (its default) additionally permutes the order of
    the *batches* with Python's ``random``; pass ``shuffle=False`` to ``fit`` for an order
    that depends on ``seed`` alone.
    """

    def __init__(
        self,
        source: PatchSampler | SceneSampler | Mapping[str, Any],
        batch_size: int | None = None,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        augmentation_list: Any = None,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
        drop_remainder: bool = False,
        epoch: int = 0,
        allowed_targets: tuple[str, ...] = (),
        compact: bool = True,
        weights: Any = None,
        read_threads: int | None = None,
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        plan = plan_loader(
            source,
            where="PatchPyDataset",
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            augmentation_list=augmentation_list,
            allowed_targets=allowed_targets,
            drop_remainder=drop_remainder,
            weights=weights,
            read_threads=read_threads,
            need_batch_size=True,
        )
        epoch = check_epoch(epoch)
        compact = check_bool(compact, "compact")
        self.plan = plan
        self.compact = compact
        self.sampler, self.weights, self.seed = plan.sampler, plan.weights, plan.seed
        self.augmentation, self.shuffle, self.drop_remainder = plan.augmentation, plan.shuffle, plan.drop_remainder
        self.batch_size = int(plan.batch_size or 0)  # never None: need_batch_size
        self._augmentations = PerThreadAugmentation(plan.augmentation)
        self._read_mask_type = plan.decode_type(compact)
        self.read_threads = resolve_read_threads(plan.read_threads)
        self.epoch = int(epoch)
        self.order = plan.order(self.epoch)
        # With a pool, the sampler is told the windows ahead as the batches come (Keras asks for them in order).
        self._plans = (
            ReadPlans.of(plan, plan.order, len(self.order), self.read_threads) if self.read_threads > 1 else None
        )
        self._skipped_before = self.sampler.skipped
        self._epoch_begun = False  # between Keras' on_epoch_begin and on_epoch_end

    # ------------------------------------------------------------------ PyDataset

    def __len__(self) -> int:
        return self.plan.batches()

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        batches = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"PatchPyDataset indices must be integers, not {type(index).__name__}.")
        position = int(index) + batches if index < 0 else int(index)
        if not 0 <= position < batches:
            raise IndexError(f"batch {index} out of range for {batches} batches.")
        windows = self.order[position * self.batch_size : (position + 1) * self.batch_size]
        if self._plans is not None:
            self._plans.reading(self.epoch, len(windows), start=position * self.batch_size)
        augmentation = self._augmentations.get()
        if self.compact:
            return self._compact_batch(windows, augmentation)
        images, masks = [], []
        for patch in self._patches(windows, np.int64):
            image, mask = to_model_inputs(
                patch, augmentation, seed=self.plan.base_seed, epoch=self.epoch, channels_last=True
            )
            images.append(image)
            masks.append(mask)
        return np.stack(images), np.stack(masks)

    def _compact_batch(self, windows: np.ndarray, augmentation: Any) -> tuple[np.ndarray, np.ndarray]:
        images, masks = [], []
        for patch in self._patches(windows, self._read_mask_type):
            image, mask = to_compact_inputs(
                patch,
                augmentation,
                seed=self.plan.base_seed,
                epoch=self.epoch,
                channels_last=True,
                mask_type=self.plan.mask_type,
            )
            images.append(image)
            masks.append(mask)
        if len({image.dtype for image in images}) > 1:  # an augmentation made some float: scale the rest first
            images = [scale_image(image) for image in images]
        return from_compact(np.stack(images), np.stack(masks))

    def _patches(self, windows: np.ndarray, mask_dtype: Any) -> Iterator[Any]:
        """The windows' patches in order, read by ``read_threads`` threads at once (`crossgeo.loading.read_ahead`)."""
        reads = read_ahead(
            self.sampler, ((int(w), self.epoch) for w in windows), mask_dtype=mask_dtype, threads=self.read_threads
        )
        try:
            yield from (patch for patch, _draw in reads)
        finally:
            reads.close()

    def on_epoch_begin(self) -> None:
        """Keras calls this when an epoch starts: the next `on_epoch_end` then ends it."""
        self._epoch_begun = True

    def on_epoch_end(self) -> None:
        """End the epoch `on_epoch_begin` began: move to the next (new window order and augmentations).

        An ``on_epoch_end`` with no epoch begun changes nothing: Keras' ``fit``/``evaluate``
        call one when they *start* (``EpochIterator.reset``), before any epoch ran, so the
        first epoch ``fit`` trains on is ``epoch`` (0 by default), as in the other adapters.
        A loop of your own calls ``on_epoch_begin()``/``on_epoch_end()`` around each epoch,
        as Keras does, or `set_epoch`.
        """
        if not self._epoch_begun:
            return
        self._epoch_begun = False
        skipped = self.sampler.skipped - self._skipped_before
        self._skipped_before = self.sampler.skipped
        # Threads share the sampler; worker processes (use_multiprocessing) keep their own count.
        report_skipped(self.epoch, skipped)
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        """Jump to ``epoch`` (e.g. when resuming): its order and augmentations."""
        self.epoch = int(epoch)
        self.order = self.plan.order(self.epoch)


# ---------------------------------------------------------------------- tiled prediction

__all__ += ["load_model", "predict_raster"]  # appended here: the top of this module belongs to the dataset code


def load_model(path: Any, *, option: str = "model_path") -> Any:
    """A Keras ``.keras`` model file loaded with ``keras.saving.load_model(path, safe_mode=True, compile=False)``.

    Model files are code: safe mode refuses the file's lambda layers (arbitrary Python
    code); custom layers load only when registered (``keras.saving.register_keras_serializable``).
    A TorchScript file, a legacy HDF5 file or a pickle is refused by
    `crossgeo.models.model_file_framework` with the way to save a ``.keras`` file.
    """
    from crossgeo.models import model_file_framework

    framework = model_file_framework(path, option=option)
    if framework != "keras":
        raise ConfigError(
            f"{option} {str(path)!r} is a {framework.capitalize()} model file (TorchScript), not a Keras file; "
            "load it with crossgeo.torch.load_model, or save the Keras model with model.save('model.keras')."
        )
    try:
        return keras.saving.load_model(str(path), safe_mode=True, compile=False)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"{option} {str(path)!r} could not be loaded safely by Keras ({' '.join(str(error).split())[:400]}); "
            "lambda layers are refused in safe mode and custom layers must be registered "
            "(keras.saving.register_keras_serializable) and imported first."
        ) from error


def predict_raster(model: Any, image_path: Any, out_path: Any, **kw: Any) -> Any:
    """`crossgeo.predict.predict_raster` with a Keras model (channels last).

    Keras models take (N, H, W, C) and return (N, H, W, K): each float32 batch is
    transposed to channels last, run with ``model(x, training=False)`` (inference mode:
    no dropout, frozen batch-norm statistics) and its scores transposed back. Reading runs
    ahead of the model in a background thread. ``kw`` are `predict_raster`'s options
    (``patch_size`` is required). Returns its `crossgeo.predict.Prediction`.
    """
    from crossgeo.predict import predict_raster as predict_tiles

    if not callable(model):
        raise OptionError(f"model must be a Keras model, got {type(model).__name__}.")

    def run(batch: np.ndarray) -> np.ndarray:
        scores = keras.ops.convert_to_numpy(model(np.ascontiguousarray(batch.transpose(0, 2, 3, 1)), training=False))
        if scores.ndim != 4:
            raise ConfigError(
                f"model returned scores of shape {scores.shape}; a Keras segmentation model returns (N, H, W, K)."
            )
        return np.ascontiguousarray(scores.transpose(0, 3, 1, 2), dtype=np.float32)

    return predict_tiles(image_path, run, out_path, **kw)
