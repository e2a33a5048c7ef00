"""Fixtures for the tf.data / Keras adapter tests; the rasters are written by ``tf_scene``."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest
from tf_scene import Scene

from crossgeo import PatchSampler


@pytest.fixture(scope="session")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return Scene(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="session")
def sampler(scene: Scene) -> PatchSampler:
    return scene.sampler()
