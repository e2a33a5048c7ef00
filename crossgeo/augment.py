"""Augmentation pipelines and the one function that turns a Patch into model inputs.

`build_augmentation` makes an ``albumentations.Compose`` from what users write in
their configs: ``_target_`` dicts (instantiated recursively, the way Hydra does, so
``OneOf(transforms=[...])`` works; OmegaConf containers too), transform objects, or a
ready ``Compose``.

A configuration file is data, never code. Every ``_target_`` (at any depth) resolves
only to a *transform class*: a subclass of ``albumentations.BasicTransform`` or
``BaseCompose`` defined in ``albumentations`` itself, checked before anything is
called - so ``albumentations.os.system``, ``albumentations.core.serialization.from_dict``
or any other function is refused with a `ConfigError` naming it, and so is
``albumentations.Lambda`` (it exists to run arbitrary callables; a ``Lambda`` object built
in code is accepted as any transform object). Transforms of your own modules are allowed
only from code or the environment, never from a configuration file:

* ``allowed_targets=["mypkg.transforms"]`` in Python (`build_augmentation`,
  ``PatchDataset``, ``make_dataset``, ``PatchPyDataset``; ``--allow-target`` of
  ``crossgeo validate``);
* the environment variable ``CROSSGEO_ALLOWED_TRANSFORMS=mypkg.transforms,other.mod``
  (comma-separated module prefixes), for Hydra runs and the CLI.

Their classes, too, must be albumentations transform subclasses defined in those modules.
An ``allowed_targets`` key inside a configuration mapping is an error.

`to_model_inputs` is called by every adapter (torch, tf.data, Keras), so they give
identical numbers for the same window and seed. With a seed, the augmentation of sample
``i`` in epoch ``e`` depends only on ``(seed, e, i)``, not on the worker or thread: one
numpy ``Generator`` and one ``random.Random`` seeded from ``(seed, e, i)`` are shared by
every transform of the pipeline (nested ``OneOf``/``SomeOf`` too), which draw from them in
turn, so the transforms are independent of each other (`seed_augmentation`).

Images are scaled by the original's rule, from the sampler's ``image_dtype`` option:
``uint8`` / 255 and ``uint16`` / 65535; ``float32`` and ``native`` images keep their values
(`scales_image`).
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
import random
import types
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
"""Module prefixes whose transform classes ``_target_`` may always resolve to."""
ALLOWED_TRANSFORMS_ENV = "CROSSGEO_ALLOWED_TRANSFORMS"
"""Environment variable: comma-separated module prefixes of users' own transform classes."""
REFUSED_TRANSFORMS = ("Lambda",)
"""albumentations transforms a configuration may not name: they run arbitrary callables."""
SCALED_IMAGE_DTYPES = ("uint8", "uint16")
"""``image_dtype`` options whose images the adapters scale to 0..1 (the original's rule: / 255, / 65535)."""
_TENSOR_CONVERTERS = {"ToTensorV2", "ToTensor"}
"""Transforms that only convert layout/type: crossgeo's adapters already return CHW float32
tensors, so these are dropped (and need no torch in a TensorFlow env)."""


def _within(name: str, allowed: Sequence[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in allowed)


def env_allowed_targets() -> tuple[str, ...]:
    """The module prefixes of `ALLOWED_TRANSFORMS_ENV` (empty when unset)."""
    value = os.environ.get(ALLOWED_TRANSFORMS_ENV, "")
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _refuse(target: Any, where: str, why: str) -> ConfigError:
    return ConfigError(
        f"augmentation_list {where}: _target_ {target!r} is not allowed: {why}. A configuration may only name "
        "albumentations transform classes; for your own transform classes (albumentations subclasses) pass "
        f"allowed_targets=[...] in code or set {ALLOWED_TRANSFORMS_ENV}=your.module."
    )


def _resolve(target: Any, allowed: Sequence[str], where: str) -> type:
    """The transform class ``target`` names, checked before anything is called.

    Only modules inside ``allowed`` are imported and walked through; the result must be an
    albumentations transform/compose class whose ``__module__`` is inside ``allowed``.
    """
    import albumentations as A

    if not isinstance(target, str) or not _within(target, allowed):
        raise _refuse(target, where, f"crossgeo only instantiates transform classes of {', '.join(allowed)}")
    parts = target.split(".")
    obj: Any = None
    if not all(part.isidentifier() for part in parts):
        parts = []  # not a dotted name: "cannot be imported" below
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        if not _within(module_name, allowed):
            break
        try:
            obj = importlib.import_module(module_name)
        except ImportError:
            continue
        for depth, part in enumerate(parts[cut:], start=cut):
            if not isinstance(obj, types.ModuleType):
                raise _refuse(target, where, f"{'.'.join(parts[:depth])} is not a module")
            if not _within(obj.__name__, allowed):
                raise _refuse(target, where, f"{'.'.join(parts[:depth])} is the module {obj.__name__!r}")
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ConfigError(
                    f"augmentation_list {where}: _target_ {target!r} cannot be imported; check the spelling."
                ) from None
        break
    if obj is None:
        raise ConfigError(f"augmentation_list {where}: _target_ {target!r} cannot be imported; check the spelling.")
    if not isinstance(obj, type) or not issubclass(obj, A.BasicTransform | A.BaseCompose):
        raise _refuse(target, where, f"it is {_describe(obj)}, not an albumentations transform class")
    if not _within(obj.__module__, allowed):
        raise _refuse(target, where, f"the class is defined in {obj.__module__!r}")
    if any(issubclass(obj, refused) for refused in _refused_classes()):
        raise _refuse(target, where, "Lambda runs arbitrary callables (build it in code if you need it)")
    return obj


def _refused_classes() -> tuple[type, ...]:
    import albumentations as A

    return tuple(getattr(A, name) for name in REFUSED_TRANSFORMS if hasattr(A, name))


def _describe(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return f"the module {obj.__name__!r}"
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    if callable(obj):
        return f"the callable {getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
    return f"a {type(obj).__name__} value"


def _is_converter(target: Any) -> bool:
    name = target.rpartition(".")[2] if isinstance(target, str) else type(target).__name__
    return name in _TENSOR_CONVERTERS


def _instantiate(node: Any, allowed: Sequence[str], where: str) -> Any:
    """Hydra-style recursive instantiation of ``_target_`` dicts (each `_resolve`-d before it is called)."""
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

    ``_target_`` names resolve only to albumentations transform classes (see the module
    docstring); ``allowed_targets`` (code only) and the `ALLOWED_TRANSFORMS_ENV` environment
    variable add module prefixes of your own transform classes.
    """
    augmentation_list = to_plain(augmentation_list)
    if augmentation_list is None or (isinstance(augmentation_list, (list, tuple)) and not augmentation_list):
        return None  # `[]` means no augmentation and needs no albumentations (the demo's val config writes it)
    import albumentations as A

    if isinstance(augmentation_list, A.Compose):
        return augmentation_list
    if isinstance(augmentation_list, (str, bytes, Mapping)) or not isinstance(augmentation_list, Sequence):
        raise ConfigError(
            f"augmentation_list must be a list of transforms or _target_ dicts, got {type(augmentation_list).__name__}."
        )
    if isinstance(allowed_targets, (str, bytes)):
        allowed_targets = [allowed_targets]  # one module, not its characters
    extra = [to_plain(prefix) for prefix in allowed_targets]
    if not all(isinstance(prefix, str) and prefix for prefix in extra):
        raise ConfigError(f"allowed_targets must be module names (strings), got {extra!r}.")
    allowed = (*DEFAULT_ALLOWED_TARGETS, *extra, *env_allowed_targets())
    transforms = []
    for pos, entry in enumerate(augmentation_list):
        where = f"entry {pos}"
        entry = to_plain(entry)
        if isinstance(entry, Mapping):
            if "_target_" not in entry:
                raise ConfigError(f"augmentation_list {where} has no _target_: {entry!r}.")
            if _is_converter(entry["_target_"]) and _within(entry["_target_"], allowed):
                continue  # dropped unresolved (nothing is imported or called)
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


def seed_augmentation(augmentation: Any, seed: int) -> None:
    """Seed a pipeline so that its output is a function of ``seed`` and its transforms draw independently.

    albumentations' ``set_random_seed`` gives every child transform a generator seeded with
    the *same* number, so ``HorizontalFlip(p=.5)`` and ``VerticalFlip(p=.5)`` would fire together
    (only "none" or "both"). Here one numpy ``Generator`` and one ``random.Random``, both from
    ``seed``, are handed to the pipeline and to every transform in it (nested ``OneOf`` /
    ``SomeOf`` too): each draws the next numbers in turn, as an unseeded pipeline does.
    """
    # BaseCompose.set_random_state hands the same two objects down to every nested transform.
    augmentation.set_random_state(np.random.default_rng(seed), random.Random(seed))
    augmentation.seed = seed  # recorded as albumentations' set_random_seed records it


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


def scales_image(image_dtype: Any) -> bool:
    """Whether model inputs scale the image to 0..1, from the sampler's ``image_dtype`` option.

    The original's rule: ``"uint8"`` images are divided by 255 and ``"uint16"`` by 65535;
    ``"float32"`` and ``"native"`` images keep the values read (a native uint8 image stays
    0..255). The decision is the option's, not the array's type: a native uint8 raster is
    not scaled although its patches are uint8.
    """
    return isinstance(image_dtype, str) and image_dtype in SCALED_IMAGE_DTYPES


def scale_image(image: np.ndarray, out: np.ndarray | None = None, *, scale: bool = True) -> np.ndarray:
    """float32 image: uint8 / 255, uint16 / 65535 when ``scale``; float, other types and ``scale=False`` only cast.

    ``scale``: `scales_image` of the sampler's ``image_dtype`` (False for ``"native"``).
    ``out``: a float32 array of the image's shape to write into (one pass, no temporary).
    """
    divisor = {np.dtype(np.uint8): np.float32(255), np.dtype(np.uint16): np.float32(65535)}.get(image.dtype)
    if not scale:
        divisor = None
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


def select_dates(patch: Any, seed: int | None, epoch: int) -> np.ndarray:
    """The image of a patch with ``time_selection="random"``'s draw made: (T, C, H, W), T = `Patch.time_steps`.

    A time-series patch holds more dates than ``time_steps`` only under ``"random"``
    (`crossgeo.SceneSampler`): ``time_steps`` of them are drawn from a generator seeded by
    (seed, epoch, window) and kept in time order, so torch, tf.data and Keras - which all call
    `to_model_inputs` / `to_compact_inputs` with the same seed and epoch - draw the same dates.
    Unseeded (``seed=None``) the draw is random. Any other image is returned as it is.
    """
    image = patch.image
    steps = getattr(patch, "time_steps", None)
    if image.ndim != 4 or steps is None or image.shape[0] <= steps:
        return image
    if seed is None:
        rng = np.random.default_rng()
    else:  # its own stream: not the augmentation's (sample_seed) numbers
        rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, patch.index, 1]))
    return image[np.sort(rng.choice(image.shape[0], size=steps, replace=False))]


def _augmented(patch: Any, augmentation: Any | None, seed: int | None, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(image HWC, mask) of a patch with ``augmentation`` applied (image dtype as the augmentation left it).

    A time series' (T, C, H, W) image gives (T, H, W, C): the dates go to albumentations as
    ``images`` - one draw of the transform's parameters applied to every date and the mask, so
    a flip flips all dates the same way.
    """
    source = select_dates(patch, seed, epoch)
    image = np.moveaxis(source, -3, -1)
    mask = patch.mask
    if augmentation is not None:
        if seed is not None:
            seed_augmentation(augmentation, sample_seed(seed, epoch, patch.index))
        if image.ndim == 4:
            out = augmentation(images=np.ascontiguousarray(image), mask=_mask_for_augmentation(mask))
            image, mask = np.asarray(out["images"]), np.asarray(out["mask"])
            if image.ndim == 3:
                image = image[..., None]
        else:
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
    if image.ndim >= 3 and np.moveaxis(image, -1, -3).flags.c_contiguous:
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
    afterwards are scaled to 0..1 (uint8 / 255, uint16 / 65535) when the patch's sampler
    scales them (``Patch.unit_scale``: ``image_dtype`` "uint8"/"uint16", not "native"; see
    `scales_image`). The image is returned CHW (torch) or HWC (``channels_last=True``, tf/Keras); a
    time series' (T, C, H, W) image is returned (T, C, H, W) or (T, H, W, C), ``time_selection="random"``'s
    dates drawn here (`select_dates`).
    """
    scale = patch.unit_scale
    if augmentation is None and not channels_last:
        # Scaled where it lies (CHW): one contiguous pass. Through the HWC view it took a strided
        # pass there and a general strided copy back (0.9 ms vs 0.05 ms per 3 x 256 x 256 patch).
        image = select_dates(patch, seed, epoch)
        return _contiguous(scale_image(image, scale=scale)), np.ascontiguousarray(patch.mask, dtype=np.int64)
    image, mask = _augmented(patch, augmentation, seed, epoch)
    image = scale_image(image, scale=scale)
    if not channels_last:
        image = np.moveaxis(image, -1, -3)
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
    augmentation such as ``Normalize`` made it float, which then stays float32; an image
    that is not scaled - ``Patch.unit_scale`` False, ``image_dtype: native`` - is float32 here,
    so every batch finisher only casts it); the mask
    is ``mask_type`` (default: the narrowest integer type holding its values). ``from_compact``
    of the result - per patch or on a whole batch, in any process or on a device - gives
    exactly the numbers `to_model_inputs` gives: the conversion is elementwise.
    """
    image, mask = _augmented(patch, augmentation, seed, epoch)
    if image.dtype.kind == "f" or not patch.unit_scale:
        image = image.astype(np.float32, copy=False)
    if not channels_last:
        image = np.moveaxis(image, -1, -3)
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
