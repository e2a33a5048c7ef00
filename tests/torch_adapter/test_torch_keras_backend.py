"""Keras 3 on its torch backend trains on `crossgeo.keras.PatchPyDataset` without importing TensorFlow.

Moved from the tf suite, whose tox env has no torch (there it always skipped); the tox torch env
installs Keras and sets ``KERAS_BACKEND=torch``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import types

import pytest
from torch_scene import COLOR_MAP, PATCH

if importlib.util.find_spec("keras") is None:  # the tox torch env installs it (Keras on the torch backend)
    pytest.skip("Keras is not installed in this environment", allow_module_level=True)


def test_keras_fits_on_the_torch_backend_without_tensorflow(scene: types.SimpleNamespace) -> None:
    """A fresh process: the backend is chosen when Keras is first imported."""
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, keras
        from crossgeo.keras import PatchPyDataset
        from crossgeo import PatchSampler
        sampler = PatchSampler(
            {scene.image_tif!r}, {scene.mask_vrt!r}, {scene.windows_csv!r}, {PATCH}, color_map={COLOR_MAP!r}
        )
        data = PatchPyDataset(sampler, 4, shuffle=True, seed=0, workers=2)
        model = keras.Sequential([keras.Input(({PATCH}, {PATCH}, 3)), keras.layers.Conv2D(4, 1)])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        loss = model.fit(data, epochs=1, verbose=0).history["loss"][0]
        assert keras.backend.backend() == "torch" and np.isfinite(loss)
        assert "tensorflow" not in sys.modules, "tensorflow was imported"
        print("ok")
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed here")
def test_predict_with_a_keras_file_names_keras_backend_torch(tmp_path: object) -> None:
    """A .keras model where Keras is installed with torch but without TensorFlow (and no KERAS_BACKEND)."""
    model = f"{tmp_path}/model.keras"
    save = f"import keras; keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)]).save({model!r})"
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, "-c", save], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    env.pop("KERAS_BACKEND")
    predict = f"from crossgeo.cli.predict import load_predictor; load_predictor({model!r})"
    done = subprocess.run([sys.executable, "-c", predict], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "CliError" in done.stderr, done.stderr[-3000:]
    assert "KERAS_BACKEND=torch" in done.stderr, done.stderr[-3000:]
