"""PyTorch adapter: a map-style ``Dataset``, the drop-in class and a DataLoader helper.

* `PatchDataset` wraps a `crossgeo.PatchSampler` and returns
  ``{"image": float32 (C, H, W), "mask": int64 (H, W)}`` (plus ``"metadata"``), made by
  `crossgeo.augment.to_model_inputs` - the same function the tf.data and Keras
  adapters call, so all three give identical numbers.
* `MBTilesCropsGeoTifMaskDataset` accepts the configuration keys of the original
  ``pytorch_segmentation_models_trainer`` class unchanged (switch ``_target_`` in the Hydra
  config), and rejects unknown keys with a suggestion.
* `make_dataloader` builds a ``DataLoader`` from the dataset's ``data_loader`` options,
  seeds every worker and keeps the augmentation epoch in step with the loop.

Reproducible augmentation: with ``seed`` set, sample ``i`` in epoch ``e`` is augmented with
a generator seeded from ``(seed, e, i)`` only, so ``num_workers=0`` and ``num_workers=2`` (or
two DDP ranks) give the same numbers. The epoch lives in shared memory, so
`PatchDataset.set_epoch` reaches persistent workers too. Where nothing sets the epoch (a plain
``DataLoader``, as the original's Lightning model builds), the ``k``-th visit of sample ``i`` is
augmented as epoch ``k``: the visits are counted in shared memory, so augmentation still changes
every epoch, identically with 0 workers, worker processes and persistent workers.

The package's modules: `crossgeo.torch.dataset` (the datasets), `crossgeo.torch.batches` (what DataLoader
workers run: seeding, compact collation, batch conversion), `crossgeo.torch.loader` (`make_dataloader` and
the epoch order) and `crossgeo.torch.predict` (model files and tiled prediction).
"""

from __future__ import annotations

try:
    import torch  # noqa: F401 - fails here, with the install line, rather than inside a submodule
except ImportError as _error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "crossgeo.torch needs PyTorch, which is not installed. In a clone of crossgeo install it with: "
        "pip install -c ci/requirements-torch.txt '.[torch]' (the constraint file pins the CPU build)"
    ) from _error

from crossgeo.torch.batches import collate_compact, finish_batch, worker_init_fn
from crossgeo.torch.dataset import MBTilesCropsGeoTifMaskDataset, PatchDataset
from crossgeo.torch.loader import EpochOrderSampler, PatchDataLoader, make_dataloader
from crossgeo.torch.predict import load_model, predict_raster

__all__ = [
    "EpochOrderSampler",
    "MBTilesCropsGeoTifMaskDataset",
    "PatchDataLoader",
    "PatchDataset",
    "collate_compact",
    "finish_batch",
    "load_model",
    "make_dataloader",
    "predict_raster",
    "worker_init_fn",
]
