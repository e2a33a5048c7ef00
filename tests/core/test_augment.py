"""The shared Patch -> model inputs function and augmentation pipelines from configs."""

from __future__ import annotations

import subprocess
import sys

import albumentations as A
import numpy as np
import pytest
from omegaconf import OmegaConf

from crossgeo import ConfigError, Patch
from crossgeo.augment import build_augmentation, sample_seed, scale_image, to_model_inputs

FLIPS = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {
        "_target_": "albumentations.OneOf",
        "transforms": [{"_target_": "albumentations.VerticalFlip"}, {"_target_": "albumentations.Transpose"}],
    },
]


def patch(index: int = 0, dtype: str = "uint8") -> Patch:
    rows, cols = np.mgrid[0:16, 0:16]
    image = np.stack([rows, cols, rows * 16 + cols]).astype(dtype)
    return Patch(image=image, mask=(rows * 16 + cols).astype(np.int64), row_off=0, col_off=0, index=index)


def test_no_augmentation_scales_and_keeps_layout() -> None:
    image, mask = to_model_inputs(patch())
    assert image.dtype == np.float32 and image.shape == (3, 16, 16) and mask.dtype == np.int64
    np.testing.assert_allclose(image, patch().image / np.float32(255))
    hwc, _ = to_model_inputs(patch(), channels_last=True)
    np.testing.assert_array_equal(hwc, np.moveaxis(image, 0, -1))
    np.testing.assert_allclose(scale_image(np.array([65535], np.uint16)), [1.0])
    np.testing.assert_array_equal(scale_image(np.array([300.5], np.float32)), [300.5])


@pytest.mark.parametrize("entries", [[], None])
def test_empty_list_is_no_augmentation(entries: object) -> None:
    assert build_augmentation(entries) is None


def test_flips_move_image_and_mask_together_reproducibly() -> None:
    aug = build_augmentation(FLIPS)
    outputs = {}
    for index in range(12):
        image, mask = to_model_inputs(patch(index), aug, seed=7, epoch=1)
        # The mask encodes the same (row, col) as image bands 0, 1: they moved together.
        np.testing.assert_array_equal((image[0] * 255).round() * 16 + (image[1] * 255).round(), mask)
        again, _ = to_model_inputs(patch(index), aug, seed=7, epoch=1)
        np.testing.assert_array_equal(image, again)
        outputs[index] = image
    assert len({o.tobytes() for o in outputs.values()}) > 1  # not the same flip every time
    other_epoch = [to_model_inputs(patch(i), aug, seed=7, epoch=2)[0] for i in range(12)]
    assert any(not np.array_equal(a, outputs[i]) for i, a in enumerate(other_epoch))
    assert sample_seed(7, 1, 3) == sample_seed(7, 1, 3) != sample_seed(7, 2, 3)


def test_accepted_forms_are_equivalent() -> None:
    forms = [
        FLIPS,
        OmegaConf.create(FLIPS),
        [A.HorizontalFlip(p=0.5), A.OneOf([A.VerticalFlip(), A.Transpose()])],
        A.Compose([A.HorizontalFlip(p=0.5), A.OneOf([A.VerticalFlip(), A.Transpose()])]),
        [*FLIPS, {"_target_": "albumentations.pytorch.ToTensorV2"}],
    ]
    results = [[to_model_inputs(patch(i), build_augmentation(f), seed=3)[1] for i in range(6)] for f in forms]
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [FLIPS[0], {"_target_": "os.system", "command": "echo"}],
            r"entry 1 \(os.system\): _target_ 'os.system' is not allowed",
        ),
        ([{"_target_": "builtins.eval", "source": "1"}], "'builtins.eval' is not allowed"),
        ([{"_target_": "albumentations.NoSuchFlip"}], r"entry 0 .*'albumentations.NoSuchFlip' cannot be imported"),
        (
            [{"_target_": "albumentations.HorizontalFlip", "q": 1}],
            r"entry 0 \(albumentations.HorizontalFlip\): .*q.* not valid.*check the argument names",
        ),
        ([{"p": 0.5}], "entry 0 has no _target_"),
        (["HorizontalFlip"], "entry 0 is 'HorizontalFlip', not an albumentations transform"),
        ({"_target_": "albumentations.HorizontalFlip"}, "must be a list"),
    ],
)
def test_bad_entries_name_their_position(entries: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_augmentation(entries)


def test_allow_listed_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="not allowed"):
        build_augmentation([{"_target_": "tests_helpers_aug.Flip"}])
    aug = build_augmentation([{"_target_": "albumentations.HorizontalFlip", "p": 1.0}], allowed_targets=["numpy"])
    image, _ = to_model_inputs(patch(), aug)
    np.testing.assert_allclose(image[1, 0, 0], 15 / 255)


def test_normalize_turns_image_float_and_is_not_rescaled() -> None:
    aug = build_augmentation([{"_target_": "albumentations.Normalize", "mean": [0, 0, 0], "std": [1, 1, 1]}])
    image, _ = to_model_inputs(patch(), aug)
    np.testing.assert_allclose(image, patch().image / np.float32(255), rtol=1e-6)


@pytest.mark.parametrize(("bands", "dtype"), [(1, np.uint8), (3, np.uint8), (5, np.uint16), (4, np.float32)])
def test_channels_last_inputs_are_the_transposed_channels_first_ones(bands: int, dtype: type) -> None:
    """tf/Keras (H, W, C) inputs hold exactly the torch (C, H, W) numbers, C-contiguous (copied channel by channel)."""
    rng = np.random.default_rng(bands)
    image = (rng.random((bands, 12, 10)) * 60000).astype(dtype)
    patch = Patch(image=image, mask=np.arange(120).reshape(12, 10) % 3, row_off=0, col_off=0, index=0)
    chw, mask = to_model_inputs(patch)
    hwc, mask_last = to_model_inputs(patch, channels_last=True)
    assert hwc.shape == (12, 10, bands) and hwc.dtype == np.float32 and hwc.flags.c_contiguous
    np.testing.assert_array_equal(hwc, np.moveaxis(chw, 0, -1))
    np.testing.assert_array_equal(hwc[..., 0], scale_image(image[0]))
    np.testing.assert_array_equal(mask, mask_last)


def test_empty_list_needs_no_albumentations() -> None:
    """`augmentation_list: []` (the demo's own val config) works where albumentations is not installed."""
    code = (
        "import sys; sys.modules['albumentations'] = None\n"
        "from omegaconf import OmegaConf\n"
        "from crossgeo.augment import build_augmentation\n"
        "print(build_augmentation([]), build_augmentation(()), build_augmentation(OmegaConf.create([])))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["None", "None", "None"]
