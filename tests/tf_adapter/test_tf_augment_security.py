"""tf.data and Keras config paths refuse non-transform ``_target_`` names; native images stay unscaled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tf_scene import Scene

from crossgeo import ConfigError
from crossgeo.augment import ALLOWED_TRANSFORMS_ENV, to_model_inputs
from crossgeo.keras import PatchPyDataset
from crossgeo.tensorflow import make_dataset


def _system(marker: Path) -> dict[str, Any]:
    return {"_target_": "albumentations.os.system", "command": f"touch {marker}"}


def _remove_in_one_of(victim: Path) -> dict[str, Any]:
    return {
        "_target_": "albumentations.OneOf",
        "transforms": [{"_target_": "albumentations.os.remove", "path": str(victim)}],
    }


def test_make_dataset_refuses_albumentations_os(scene: Scene, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError, match=r"_target_ 'albumentations\.os\.system' is not allowed"):
        make_dataset(scene.config(augmentation_list=[_system(marker)]))
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    with pytest.raises(ConfigError, match=r"_target_ 'albumentations\.os\.remove' is not allowed"):
        make_dataset(scene.config(augmentation_list=[_remove_in_one_of(victim)]))
    assert not marker.exists() and victim.read_text() == "keep me"


def test_patch_py_dataset_refuses_albumentations_os(scene: Scene, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError, match=r"_target_ 'albumentations\.os\.system' is not allowed"):
        PatchPyDataset(scene.config(augmentation_list=[_system(marker)]), batch_size=2)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    with pytest.raises(ConfigError, match=r"_target_ 'albumentations\.os\.remove' is not allowed"):
        PatchPyDataset(scene.config(augmentation_list=[_remove_in_one_of(victim)]), batch_size=2)
    assert not marker.exists() and victim.read_text() == "keep me"


def test_allowed_targets_in_a_mapping_is_an_error(scene: Scene) -> None:
    for build in (lambda c: make_dataset(c), lambda c: PatchPyDataset(c, batch_size=2)):
        with pytest.raises(ConfigError, match=f"allowed_targets cannot be set .*{ALLOWED_TRANSFORMS_ENV}"):
            build(scene.config(allowed_targets=["os"]))


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("augmentation", [None, [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}]])
def test_native_uint8_images_reach_the_model_as_read(scene: Scene, compact: bool, augmentation: Any) -> None:
    sampler = scene.sampler(image_dtype="native")
    assert sampler.image_dtype == np.uint8 and not sampler.unit_scale
    dataset = make_dataset(sampler, batch_size=4, seed=2, augmentation_list=augmentation, compact=compact, epoch=0)
    images, masks = next(iter(dataset))
    keras_images, keras_masks = PatchPyDataset(
        sampler, batch_size=4, seed=2, augmentation_list=augmentation, compact=compact
    )[0]
    assert images.dtype.name == "float32" and float(images.numpy().max()) > 1
    np.testing.assert_array_equal(keras_images, images.numpy())
    np.testing.assert_array_equal(keras_masks, masks.numpy())
    from crossgeo.augment import build_augmentation

    aug = build_augmentation(augmentation)
    for k in range(4):
        expected, mask = to_model_inputs(sampler[k], aug, seed=2, epoch=0, channels_last=True)
        np.testing.assert_array_equal(images.numpy()[k], expected)
        np.testing.assert_array_equal(masks.numpy()[k], mask)
        if aug is None:
            np.testing.assert_array_equal(expected, np.moveaxis(sampler[k].image, 0, -1).astype(np.float32))
