"""Augmentation pipelines and the one function that turns a Patch into model inputs.

`build_augmentation` makes an ``albumentations.Compose`` from what users write in
their configs: ``_target_`` dicts (instantiated recursively, the way Hydra does, so
``OneOf(transforms=[...])`` works; OmegaConf containers too), transform objects, or a
ready ``Compose``. ``_target_`` names resolve only inside ``albumentations`` and the
modules/names passed as ``allowed_targets`` - a shared YAML file cannot run
``os.system``.

`to_model_inputs` is called by every adapter (torch, tf.data, Keras), so they give
identical numbers for the same window and seed. With a seed, the augmentation of sample
``i`` in epoch ``e`` depends only on ``(seed, e, i)``, not on the worker or thread.
"""

from __future__ import annotations

import copy
import importlib
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from crossgeo.errors import ConfigError
from crossgeo.options import to_plain
from crossgeo.threads import PerThread

log = logging.getLogger("crossgeo")

DEFAULT_ALLOWED_TARGETS = ("albumentations",)
"""Module prefixes whose names ``_target_`` may always resolve to."""
_TENSOR_CONVERTERS = {"ToTensorV2", "ToTensor"}
"""Transforms that only convert layout/type: crossgeo's adapters already return CHW float32
tensors, so these are dropped (and need no torch in a TensorFlow env)."""


def _target_allowed(target: str, allowed: Sequence[str]) -> bool:
    return any(target == prefix or target.startswith(prefix + ".") for prefix in allowed)


def _resolve(target: str, allowed: Sequence[str], where: str) -> Any:
    if not isinstance(target, str) or not _target_allowed(target, allowed):
        raise ConfigError(
            f"augmentation_list {where}: _target_ {target!r} is not allowed; crossgeo only instantiates names "
            f"inside {', '.join(allowed)}. Add the module to allowed_targets if you trust it."
        )
    module_name, _, attr = target.rpartition(".")
    while module_name:
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            module_name, _, head = module_name.rpartition(".")
            attr = f"{head}.{attr}"
            continue
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            break
        return obj
    raise ConfigError(f"augmentation_list {where}: _target_ {target!r} cannot be imported; check the spelling.")


def _is_converter(target: Any) -> bool:
    name = target.rpartition(".")[2] if isinstance(target, str) else type(target).__name__
    return name in _TENSOR_CONVERTERS


def _instantiate(node: Any, allowed: Sequence[str], where: str) -> Any:
    """Hydra-style recursive instantiation of ``_target_`` dicts."""
    node = to_plain(node)
    if isinstance(node, Mapping):
        if "_target_" not in node:
            return {k: _instantiate(v, allowed, f"{where}.{k}") for k, v in node.items()}
        target = node["_target_"]
        factory = _resolve(target, allowed, where)
        kwargs = {k: _instantiate(v, allowed, f"{where}.{k}") for k, v in node.items() if not k.startswith("_")}
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                obj = factory(**kwargs)
        except Exception as error:
            raise ConfigError(f"augmentation_list {where}: {target}({kwargs}) failed: {error}") from error
        for warning in caught:
            if "not valid for transform" in str(warning.message):
                # albumentations only warns about unknown arguments; a typo must not be ignored.
                raise ConfigError(f"augmentation_list {where}: {warning.message}; check the argument names.")
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        return obj
    if isinstance(node, (list, tuple)):
        return [_instantiate(v, allowed, f"{where}[{i}]") for i, v in enumerate(node)]
    return node


def build_augmentation(augmentation_list: Any, *, allowed_targets: Iterable[str] = ()) -> Any | None:
    """An ``albumentations.Compose`` for the list, or None when there is nothing to apply.

    Accepts None/``[]``, a ready ``Compose``, or a list of ``_target_`` dicts and transform
    objects. Tensor converters (``ToTensorV2``) are dropped: the adapters always return
    float32 CHW. A bad entry raises `ConfigError` naming its position and target.
    """
    augmentation_list = to_plain(augmentation_list)
    if augmentation_list is None:
        return None
    import albumentations as A

    if isinstance(augmentation_list, A.Compose):
        return augmentation_list
    if isinstance(augmentation_list, (str, bytes, Mapping)) or not isinstance(augmentation_list, Sequence):
        raise ConfigError(
            f"augmentation_list must be a list of transforms or _target_ dicts, got {type(augmentation_list).__name__}."
        )
    allowed = (*DEFAULT_ALLOWED_TARGETS, *allowed_targets)
    transforms = []
    for pos, entry in enumerate(augmentation_list):
        where = f"entry {pos}"
        entry = to_plain(entry)
        if isinstance(entry, Mapping):
            if "_target_" not in entry:
                raise ConfigError(f"augmentation_list {where} has no _target_: {entry!r}.")
            if _is_converter(entry["_target_"]):
                continue
            transform = _instantiate(entry, allowed, f"{where} ({entry['_target_']})")
        else:
            transform = entry
        if _is_converter(transform):
            continue
        if not isinstance(transform, A.BasicTransform | A.BaseCompose):
            raise ConfigError(
                f"augmentation_list {where} is {transform!r}, not an albumentations transform or _target_ dict."
            )
        transforms.append(transform)
    return A.Compose(transforms) if transforms else None


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that depends only on (seed, epoch, index)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1)[0])


def check_weights(weights: Any, n: int) -> np.ndarray:
    """``weights`` as float64, one finite non-negative number per window, not all zero.

    Raises `ConfigError` (a ``ValueError``) naming ``weights`` and the fix otherwise.
    """
    if isinstance(weights, (str, bytes, Mapping)) or np.ndim(weights) != 1:
        raise ConfigError(
            f"weights must be a 1-D sequence with one number per window ({n}), got {type(weights).__name__}."
        )
    try:
        values = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"weights must hold numbers, one per window: {error}.") from error
    if values.shape != (n,):
        raise ConfigError(
            f"weights has {values.shape[0]} values but there are {n} windows; give one weight per window "
            "(in the windows' order)."
        )
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ConfigError(f"weights holds NaN or infinite values (first at window {int(bad[0])}); fix or drop them.")
    negative = np.flatnonzero(values < 0)
    if negative.size:
        raise ConfigError(
            f"weights holds {negative.size} negative value(s) (first {values[negative[0]]:g} at window "
            f"{int(negative[0])}); weights are relative sampling frequencies >= 0."
        )
    if n and not values.any():
        raise ConfigError("weights are all zero, so no window could be drawn; give some window a positive weight.")
    return values


def epoch_order(n: int, seed: int, epoch: int, weights: Any = None) -> np.ndarray:
    """The window order of ``epoch`` (int64): a permutation of ``range(n)``, or a weighted draw.

    It depends only on ``(seed, epoch)`` (and ``weights``), so every worker, replica and
    framework adapter (torch, tf.data, Keras) visits the windows in the same order for the
    same seed. With ``weights`` (one non-negative number per window, see `check_weights`)
    the order is ``n`` windows drawn with replacement, window ``i`` with probability
    ``weights[i] / sum(weights)``: inverse-CDF sampling of ``n`` uniform numbers from the
    same seeded generator (a window of weight 0 is never drawn).
    """
    sequence = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch], spawn_key=(0x0D3E,))
    rng = np.random.default_rng(sequence)
    if weights is None:
        return rng.permutation(n).astype(np.int64)
    cdf = np.cumsum(check_weights(weights, n))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cdf /= cdf[-1]  # the last entry is exactly 1.0 and the uniform numbers are < 1: never past the end
    return np.searchsorted(cdf, rng.random(n), side="right").astype(np.int64)


class PerThreadAugmentation:
    """One deep copy of an augmentation pipeline per thread (a `crossgeo.threads.PerThread`).

    A seeded call is "set the pipeline's RNG, then draw from it"; threads sharing one
    pipeline (tf.data's parallel map, Keras' worker threads) would interleave those steps
    and get wrong numbers, so `get` hands each thread its own copy. A copy whose thread
    ended is adopted by the next new thread (seeded calls reset its RNG anyway).
    """

    def __init__(self, augmentation: Any | None) -> None:
        self.augmentation = augmentation
        self._copies: PerThread[Any] = PerThread(partial(copy.deepcopy, augmentation))

    def get(self) -> Any | None:
        """This thread's copy (None when there is no augmentation)."""
        if self.augmentation is None:
            return None
        return self._copies.get()


def _mask_for_augmentation(mask: np.ndarray) -> np.ndarray:
    """OpenCV-based transforms reject int64 masks: use the narrowest type holding the classes."""
    top = int(mask.max()) if mask.size else 0
    if top < 256:
        return mask.astype(np.uint8)
    if top < 65536:
        return mask.astype(np.uint16)
    return mask.astype(np.int32)


def scale_image(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 image: uint8 / 255, uint16 / 65535; float and other types unchanged in value.

    ``out``: a float32 array of the image's shape to write into (one pass, no temporary).
    """
    divisor = np.float32(255) if image.dtype == np.uint8 else np.float32(65535) if image.dtype == np.uint16 else None
    if divisor is None:
        if out is None:
            return image.astype(np.float32, copy=False)
        np.copyto(out, image, casting="unsafe")
        return out
    if out is None:
        out = np.empty(image.shape, dtype=np.float32)
    # The integer converts to float32 exactly, then one float32 division: the same numbers as
    # ``image.astype(np.float32) / np.float32(255)``.
    return np.divide(image, divisor, out=out, dtype=np.float32)


def _augmented(patch: Any, augmentation: Any | None, seed: int | None, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(image HWC, mask) of a patch with ``augmentation`` applied (image dtype as the augmentation left it)."""
    image = np.moveaxis(patch.image, 0, -1)
    mask = patch.mask
    if augmentation is not None:
        if seed is not None:
            augmentation.set_random_seed(sample_seed(seed, epoch, patch.index))
        out = augmentation(image=np.ascontiguousarray(image), mask=_mask_for_augmentation(mask))
        image, mask = np.asarray(out["image"]), np.asarray(out["mask"])
        if image.ndim == 2:
            image = image[..., None]
    return image, mask


def _contiguous(image: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray(image)``, fast for an HWC view of a CHW array (the usual channels-last case).

    numpy's general strided copy of such a view is ~4x slower (0.66 vs 0.15 ms for a float32
    3 x 256 x 256 image) than writing the channels one by one into an HWC array.
    """
    if image.flags.c_contiguous:
        return image
    if image.ndim == 3 and np.moveaxis(image, -1, 0).flags.c_contiguous:
        out = np.empty(image.shape, dtype=image.dtype)
        for channel in range(image.shape[-1]):
            out[..., channel] = image[..., channel]
        return out
    return np.ascontiguousarray(image)


def to_model_inputs(
    patch: Any,
    augmentation: Any | None = None,
    *,
    seed: int | None = None,
    epoch: int = 0,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, mask int64) for a model, with ``augmentation`` applied to both.

    The augmentation sees the HWC numpy image and the mask together. Images still integer
    afterwards are scaled to 0..1 (uint8 / 255, uint16 / 65535). The image is returned CHW
    (torch) or HWC (``channels_last=True``, tf/Keras).
    """
    if augmentation is None and not channels_last:
        # Scaled where it lies (CHW): one contiguous pass. Through the HWC view it took a strided
        # pass there and a general strided copy back (0.9 ms vs 0.05 ms per 3 x 256 x 256 patch).
        return _contiguous(scale_image(patch.image)), np.ascontiguousarray(patch.mask, dtype=np.int64)
    image, mask = _augmented(patch, augmentation, seed, epoch)
    image = scale_image(image)
    if not channels_last:
        image = np.moveaxis(image, -1, 0)
    return _contiguous(image), np.ascontiguousarray(mask, dtype=np.int64)


def mask_dtype(low: int, high: int) -> np.dtype[Any]:
    """The narrowest integer type holding every value of ``low..high`` (uint8 for classes 0..255)."""
    return np.dtype(np.promote_types(np.min_scalar_type(int(low)), np.min_scalar_type(int(high))))


def decode_type(mask_type: Any, augmentation: Any | None, *, compact: bool = True) -> np.dtype[Any]:
    """The type the sampler decodes a compact loader's mask into (`crossgeo.PatchSampler.get`).

    ``mask_type`` itself without an augmentation (no int64 copy only to be narrowed again);
    int64 with one, so the augmentation sees the mask the float path gives it and the results
    stay equal; int64 when the items are not compact.
    """
    return np.dtype(mask_type) if compact and augmentation is None else np.dtype(np.int64)


def to_compact_inputs(
    patch: Any,
    augmentation: Any | None = None,
    *,
    seed: int | None = None,
    epoch: int = 0,
    channels_last: bool = False,
    mask_type: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`to_model_inputs` without the conversion: cheap to send between processes, finished by `from_compact`.

    The image keeps the dtype it has after augmentation (the stored uint8/uint16 unless an
    augmentation such as ``Normalize`` made it float, which then stays float32); the mask
    is ``mask_type`` (default: the narrowest integer type holding its values). ``from_compact``
    of the result - per patch or on a whole batch, in any process or on a device - gives
    exactly the numbers `to_model_inputs` gives: the conversion is elementwise.
    """
    image, mask = _augmented(patch, augmentation, seed, epoch)
    if image.dtype.kind == "f":
        image = image.astype(np.float32, copy=False)
    if not channels_last:
        image = np.moveaxis(image, -1, 0)
    if mask_type is not None and mask.dtype == mask_type:
        wanted = mask.dtype  # decoded straight into it (`PatchSampler.get`): every value fits
    elif mask.size:
        low, high = int(mask.min()), int(mask.max())
        wanted = mask_dtype(low, high) if mask_type is None else np.dtype(mask_type)
        info = np.iinfo(wanted)
        if low < info.min or high > info.max:
            raise ConfigError(
                f"mask values {low}..{high} of window {patch.index} do not fit the compact mask type {wanted}; "
                "use compact=False (or a mask_fill_value / augmentation mask value inside 0..n_classes-1)."
            )
    else:
        wanted = np.dtype(np.uint8) if mask_type is None else np.dtype(mask_type)
    return _contiguous(image), np.ascontiguousarray(mask, dtype=wanted)


def from_compact(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 image, int64 mask) from `to_compact_inputs`' arrays, one patch or a stacked batch."""
    return scale_image(image), mask.astype(np.int64)
