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

import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    import keras
except ImportError as error:  # pragma: no cover - exercised only without keras
    if error.name != "keras":
        raise  # Keras is installed but its backend (e.g. jax) is missing or broken: show the real error
    raise ImportError(
        "crossgeo.keras needs Keras 3; install it with: pip install 'crossgeo[tensorflow]' "
        "(or install keras with the JAX or torch backend)"
    ) from error

from crossgeo.augment import PerThreadAugmentation, build_augmentation, epoch_order, to_model_inputs
from crossgeo.config import check_seed, resolve_source
from crossgeo.errors import ConfigError, OptionError
from crossgeo.sampler import PatchSampler, report_skipped
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
        allowed_targets: Extra module prefixes ``_target_`` may resolve to.

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
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        sampler, options = resolve_source(source, "PatchPyDataset")
        if batch_size is None:
            batch_size = options.get("batch_size")
        if batch_size is None or isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise OptionError(f"PatchPyDataset needs batch_size, a positive integer; got {batch_size!r}.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        if seed is None:
            seed = options.get("seed")
        seed = check_seed(seed)
        if augmentation_list is None:
            augmentation_list = options.get("augmentation_list")
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise OptionError(f"epoch must be a non-negative integer, got {epoch!r}.")
        allowed = tuple(allowed_targets)

        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle or options.get("shuffle", False))
        self.drop_remainder = bool(drop_remainder or options.get("drop_last", False))
        self.seed = seed
        self.augmentation = build_augmentation(augmentation_list, allowed_targets=allowed)
        self._augmentations = PerThreadAugmentation(self.augmentation)
        # Unseeded: a seed drawn once, so threads/processes still agree on an epoch's order.
        self._base_seed = int(seed) if seed is not None else int(np.random.default_rng().integers(2**32))
        self.epoch = int(epoch)
        self.order = self._order()
        self._skipped_before = sampler.skipped

    # ------------------------------------------------------------------ PyDataset

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_remainder else math.ceil(n / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        batches = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"PatchPyDataset indices must be integers, not {type(index).__name__}.")
        position = int(index) + batches if index < 0 else int(index)
        if not 0 <= position < batches:
            raise IndexError(f"batch {index} out of range for {batches} batches.")
        windows = self.order[position * self.batch_size : (position + 1) * self.batch_size]
        augmentation = self._augmentations.get()
        images, masks = [], []
        for window in windows:
            image, mask = to_model_inputs(
                self.sampler[int(window)], augmentation, seed=self._base_seed, epoch=self.epoch, channels_last=True
            )
            images.append(image)
            masks.append(mask)
        return np.stack(images), np.stack(masks)

    def on_epoch_end(self) -> None:
        """Move to the next epoch (a new window order when shuffling, new augmentations).

        Keras' ``fit``/``evaluate`` also call this once when they *start*
        (``EpochIterator.reset``), before any epoch ran; that call is ignored, so the first
        epoch ``fit`` trains on is ``epoch`` (0 by default), as in the other adapters.
        """
        if _called_by_keras_reset():
            return
        skipped = self.sampler.skipped - self._skipped_before
        self._skipped_before = self.sampler.skipped
        # Threads share the sampler; worker processes (use_multiprocessing) keep their own count.
        report_skipped(self.epoch, skipped)
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        """Jump to ``epoch`` (e.g. when resuming): its order and augmentations."""
        self.epoch = int(epoch)
        self.order = self._order()

    # ------------------------------------------------------------------ internals

    def _order(self) -> np.ndarray:
        n = len(self.sampler)
        return epoch_order(n, self._base_seed, self.epoch) if self.shuffle else np.arange(n, dtype=np.int64)


def _called_by_keras_reset() -> bool:
    """True when Keras' ``EpochIterator.reset`` (not the end of an epoch) is the caller."""
    frame: Any = sys._getframe(2)
    for _ in range(4):
        if frame is None:
            return False
        caller = frame.f_locals.get("self")
        if frame.f_code.co_name == "reset" and type(caller).__name__.endswith("EpochIterator"):
            return True
        frame = frame.f_back
    return False
