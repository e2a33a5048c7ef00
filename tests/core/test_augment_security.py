"""What a configuration's ``_target_`` may name, users' own transforms, independent seeded draws, native scaling.

A configuration file is data: ``_target_`` resolves only to albumentations transform
classes (or, allowed from code or the environment, a user's albumentations subclasses),
checked before anything is called. Seeded pipelines draw each transform independently.
``image_dtype: native`` images reach the model as read (the original's rule).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from crossgeo import ConfigError, Patch, PatchSampler
from crossgeo.augment import (
    ALLOWED_TRANSFORMS_ENV,
    PerThreadAugmentation,
    build_augmentation,
    from_compact,
    to_compact_inputs,
    to_model_inputs,
)
from crossgeo.config import sampler_from_config, split_config
from crossgeo.testing import CoordinateScene as Scene

# --------------------------------------------------------------------------- A: _target_ only to transform classes


def _system(marker: Path) -> dict[str, Any]:
    return {"_target_": "albumentations.os.system", "command": f"touch {marker}"}


def test_os_system_through_albumentations_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError, match=r"_target_ 'albumentations.os.system' is not allowed: albumentations.os is "):
        build_augmentation([_system(marker)])
    assert not marker.exists()


def test_os_remove_nested_in_one_of_is_refused_and_the_file_survives(tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    entries = [
        {
            "_target_": "albumentations.OneOf",
            "transforms": [{"_target_": "albumentations.HorizontalFlip"}, {"_target_": "albumentations.os.remove"}],
        }
    ]
    entries[0]["transforms"][1]["path"] = str(victim)
    for given in (entries, OmegaConf.create(entries)):
        with pytest.raises(ConfigError, match=r"entry 0 .*transforms\[1\].*'albumentations.os.remove' is not allowed"):
            build_augmentation(given)
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("albumentations.core.serialization.from_dict", r"it is the callable .*from_dict, not an albumentations"),
        ("albumentations.Lambda", "Lambda runs arbitrary callables"),
        (
            "albumentations.core.composition.np.random.default_rng",
            "albumentations.core.composition.np is the module 'numpy'",
        ),
        ("albumentations.HorizontalFlip.__init__", "albumentations.HorizontalFlip is not a module"),
        ("albumentations.core", "it is the module 'albumentations.core', not"),
        ("albumentations.__version__", "it is a str value"),
        ("os.system", "crossgeo only instantiates transform classes of albumentations"),
        ("builtins.eval", "crossgeo only instantiates transform classes of albumentations"),
    ],
)
def test_only_albumentations_transform_classes_resolve(target: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"_target_ '{target}' is not allowed: {why}.*CROSSGEO_ALLOWED_TRANSFORMS"):
        build_augmentation([{"_target_": target}])


def test_a_nested_target_at_any_depth_must_be_a_transform_class(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    deep = {"_target_": "albumentations.HorizontalFlip", "p": {"a": [{"b": _system(marker)}]}}
    with pytest.raises(ConfigError, match=r"p.a\[0\].b: _target_ 'albumentations.os.system' is not allowed"):
        build_augmentation([deep])
    assert not marker.exists()
    # Plain values, lists and dicts and nested transform classes are fine.
    aug = build_augmentation(
        [{"_target_": "albumentations.SomeOf", "n": 1, "transforms": [{"_target_": "albumentations.VerticalFlip"}]}]
    )
    assert isinstance(aug.transforms[0], A.SomeOf)


def test_a_lambda_object_built_in_code_is_accepted() -> None:
    aug = build_augmentation([A.Lambda(image=_upside_down, p=1.0)])
    image, _ = to_model_inputs(_patch(), aug)
    np.testing.assert_array_equal(image[0, :, 0], np.arange(15, -1, -1, dtype=np.float32) / np.float32(255))


def test_validate_cli_refuses_the_target_and_runs_nothing(tmp_path: Path, scene: Scene) -> None:
    marker = tmp_path / "pwned"
    config = _config(tmp_path, scene, augmentation_list=[_system(marker)])
    result = _crossgeo("validate", config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "'albumentations.os.system' is not allowed" in result.stdout
    assert not marker.exists()


# --------------------------------------------------------------------------- B: users' own transforms


USER_MODULE = '''
import albumentations as A
from os import system


class ShiftRows(A.DualTransform):
    """Rolls image and mask down by ``rows`` rows."""

    def __init__(self, rows=1, p=1.0):
        super().__init__(p=p)
        self.rows = rows

    def apply(self, img, **params):
        return __import__("numpy").roll(img, self.rows, axis=0)

    def apply_to_mask(self, mask, **params):
        return __import__("numpy").roll(mask, self.rows, axis=0)


def not_a_transform(**kwargs):
    raise AssertionError("called")
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"cg_user_transforms_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(ALLOWED_TRANSFORMS_ENV, raising=False)
    return name


def _shift(module: str) -> list[dict[str, Any]]:
    return [{"_target_": f"{module}.ShiftRows", "rows": 2}]


def _assert_shifted(aug: Any) -> None:
    image, mask = to_model_inputs(_patch(), aug)
    np.testing.assert_array_equal(image[0, :, 0], np.roll(np.arange(16, dtype=np.float32), 2) / np.float32(255))
    np.testing.assert_array_equal(mask[:, 0], np.roll(np.arange(16) * 16, 2))


def test_user_transforms_are_refused_unless_allowed(user_module: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{user_module}.ShiftRows' is not allowed: crossgeo only instantiates"):
        build_augmentation(_shift(user_module))


def test_user_transforms_allowed_in_code(user_module: str) -> None:
    _assert_shifted(build_augmentation(_shift(user_module), allowed_targets=[user_module]))
    _assert_shifted(build_augmentation(_shift(user_module), allowed_targets=user_module))  # one name, not letters


def test_user_transforms_allowed_by_the_environment(user_module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOWED_TRANSFORMS_ENV, f"other.mod, {user_module}")
    _assert_shifted(build_augmentation(_shift(user_module)))


@pytest.mark.parametrize(
    ("attr", "why"),
    [("system", "it is the callable posix.system"), ("not_a_transform", "it is the callable .*not_a_transform")],
)
def test_allowed_user_modules_still_resolve_only_to_transform_classes(
    user_module: str, monkeypatch: pytest.MonkeyPatch, attr: str, why: str
) -> None:
    monkeypatch.setenv(ALLOWED_TRANSFORMS_ENV, user_module)
    with pytest.raises(ConfigError, match=f"is not allowed: {why}, not an albumentations transform class"):
        build_augmentation([{"_target_": f"{user_module}.{attr}", "command": "true"}])


def test_allowed_targets_in_a_configuration_is_an_error(tmp_path: Path, scene: Scene) -> None:
    options = {"image_mbtiles_path": "a", "mask_path": "b", "crops_path": "c", "patch_size": 1}
    for config in ({**options, "allowed_targets": ["mypkg"]}, OmegaConf.create({**options, "allowed_targets": []})):
        with pytest.raises(ConfigError, match=r"allowed_targets cannot be set .*CROSSGEO_ALLOWED_TRANSFORMS"):
            split_config(config)
        with pytest.raises(ConfigError, match="allowed_targets cannot be set"):
            sampler_from_config(config)
    config = _config(tmp_path, scene, allowed_targets=["os"])
    result = _crossgeo("validate", config)
    assert result.returncode != 0
    assert "allowed_targets cannot be set" in result.stdout + result.stderr


# --------------------------------------------------------------------------- C: independent seeded draws


def _coordinate_patch(index: int) -> Patch:
    rows, cols = np.mgrid[0:8, 0:8]
    image = np.stack([rows, cols, rows]).astype(np.uint8)
    return Patch(image=image, mask=(rows * 8 + cols).astype(np.int64), row_off=0, col_off=0, index=index)


def _flip_state(image: np.ndarray) -> tuple[bool, bool]:
    """(horizontal, vertical) flips that made ``image`` from the coordinate patch."""
    rows, cols = np.rint(image[0] * 255), np.rint(image[1] * 255)
    return bool(cols[0, 0] == 7), bool(rows[0, 0] == 7)


def _chi_square(counts: list[int]) -> float:
    expected = sum(counts) / len(counts)
    return float(sum((c - expected) ** 2 / expected for c in counts))


# 3 degrees of freedom: P(chi2 > 16.27) = 0.001. A correlated pipeline (only "none"/"both") scores ~n.
CHI2_LIMIT = 16.27


@pytest.mark.parametrize(
    "entries",
    [
        [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)],
        [A.HorizontalFlip(p=0.5), A.OneOf([A.VerticalFlip(p=1.0)], p=0.5)],
        [A.OneOf([A.HorizontalFlip(p=1.0)], p=0.5), A.SomeOf([A.VerticalFlip(p=0.5)], n=1, p=1.0)],
    ],
    ids=["flips", "one-of", "nested"],
)
def test_seeded_transforms_draw_independently(entries: list[Any]) -> None:
    aug = build_augmentation(entries)
    counts: dict[tuple[bool, bool], int] = {}
    n = 0
    for epoch in range(3):
        for index in range(160):
            image, _ = to_model_inputs(_coordinate_patch(index), aug, seed=11, epoch=epoch)
            state = _flip_state(image)
            counts[state] = counts.get(state, 0) + 1
            n += 1
    table = [counts.get(s, 0) for s in ((False, False), (True, False), (False, True), (True, True))]
    assert n == 480 and all(c > 0 for c in table), table
    assert _chi_square(table) < CHI2_LIMIT, table


def test_seeded_output_is_a_function_of_seed_epoch_and_index() -> None:
    aug = build_augmentation([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomBrightnessContrast(p=0.5)])

    def run(seed: int, epoch: int) -> list[np.ndarray]:
        return [to_model_inputs(_coordinate_patch(i), aug, seed=seed, epoch=epoch)[0] for i in range(40)]

    first = run(5, 0)
    for again in (run(5, 0), run(5, 0)):
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, run(5, 1)))
    assert any(not np.array_equal(a, b) for a, b in zip(first, run(6, 0)))


def test_per_thread_copies_give_the_same_seeded_results() -> None:
    aug = build_augmentation(
        [A.HorizontalFlip(p=0.5), A.OneOf([A.VerticalFlip(p=1.0), A.Transpose(p=1.0)], p=0.7), A.VerticalFlip(p=0.5)]
    )
    expected = [to_model_inputs(_coordinate_patch(i), aug, seed=3, epoch=2)[0] for i in range(64)]
    copies = PerThreadAugmentation(aug)
    results: dict[int, np.ndarray] = {}

    def work(start: int) -> None:
        for i in range(start, 64, 4):
            results[i] = to_model_inputs(_coordinate_patch(i), copies.get(), seed=3, epoch=2)[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(64):
        np.testing.assert_array_equal(results[i], expected[i])


# --------------------------------------------------------------------------- D: image_dtype native


@pytest.mark.parametrize("augmentation", [None, [A.HorizontalFlip(p=1.0)]])
@pytest.mark.parametrize("channels_last", [False, True])
def test_native_uint8_images_reach_the_model_as_read(
    tmp_path: Path, scene: Scene, augmentation: Any, channels_last: bool
) -> None:
    windows = scene.windows([0, 100], [0, 100])
    native = PatchSampler(scene.image, scene.lonlat_mask(), windows, 64, n_classes=4, image_dtype="native")
    scaled = PatchSampler(scene.image, scene.lonlat_mask(), windows, 64, n_classes=4)
    assert native.image_dtype == np.uint8 and not native.unit_scale and scaled.unit_scale
    aug = build_augmentation(augmentation)
    for i in range(len(native)):
        patch = native[i]
        image, _ = to_model_inputs(patch, aug, seed=1, channels_last=channels_last)
        reference, _ = to_model_inputs(scaled[i], aug, seed=1, channels_last=channels_last)
        assert image.dtype == np.float32 and image.max() > 1 and image.max() <= 255
        np.testing.assert_array_equal(image, reference * np.float32(255))  # x/255*255 is exact for 0..255
        if aug is None and not channels_last:
            np.testing.assert_array_equal(image, patch.image.astype(np.float32))
        compact, mask = to_compact_inputs(patch, aug, seed=1, channels_last=channels_last)
        finished, finished_mask = from_compact(compact, mask)
        np.testing.assert_array_equal(finished, image)  # bit-identical to the float path
        assert finished_mask.dtype == np.int64


def test_predict_raster_feeds_native_images_unscaled(tmp_path: Path, scene: Scene) -> None:
    from crossgeo.predict import predict_raster

    seen: dict[str, float] = {}

    def predict(x: np.ndarray) -> np.ndarray:
        seen[str(len(seen))] = float(x.max())
        return np.repeat(x[:, :1], 2, axis=1)

    for dtype, top in (("native", 255.0), ("uint8", 1.0)):
        seen.clear()
        predict_raster(scene.image, predict, tmp_path / f"{dtype}.tif", patch_size=128, image_dtype=dtype)
        assert max(seen.values()) == pytest.approx(top)


# --------------------------------------------------------------------------- helpers


def _upside_down(image: np.ndarray, **_: Any) -> np.ndarray:
    return image[::-1]


def _patch(index: int = 0) -> Patch:
    rows, cols = np.mgrid[0:16, 0:16]
    image = np.stack([rows, cols, rows * 16 + cols]).astype(np.uint8)
    return Patch(image=image, mask=(rows * 16 + cols).astype(np.int64), row_off=0, col_off=0, index=index)


def _config(folder: Path, scene: Scene, **extra: Any) -> Path:
    options = {
        "image_mbtiles_path": str(scene.image),
        "mask_path": str(scene.lonlat_mask()),
        "crops_path": str(scene.windows([0, 100], [0, 100])),
        "patch_size": 64,
        "n_classes": 4,
        **extra,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"train_dataset": {"_target_": "anything.Dataset", **options}}))
    return path


def _crossgeo(*argv: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crossgeo", *map(str, argv)], capture_output=True, text=True, timeout=300, check=False
    )
