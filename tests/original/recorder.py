"""A Lightning callback the original pipeline instantiates from its config (``callbacks:``).

It records what the training loop saw - per epoch, each window's (row_off, col_off) and a hash
of its augmented image - and the metrics Lightning logged, then a hash of the trained weights,
as JSON in ``out``. tests/original/test_original_pipeline.py compares two runs' files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


def _digest(array: Any) -> str:
    return hashlib.sha1(array.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class Recorder(pl.Callback):
    """Writes ``{"epochs": [[[row, col, image_sha1], ...], ...], "metrics": [...], "weights": sha1}``."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.epochs: list[list[list[Any]]] = []
        self.metrics: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs.append([])

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        meta = batch["metadata"]
        for image, row, col in zip(batch["image"], meta["row_off"], meta["col_off"]):
            self.epochs[-1].append([int(row), int(col), _digest(image)])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.metrics.append({k: float(v) for k, v in sorted(trainer.callback_metrics.items())})

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        weights = hashlib.sha1()
        for name, tensor in sorted(pl_module.state_dict().items()):
            weights.update(name.encode())
            weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        record = {"epochs": self.epochs, "metrics": self.metrics, "weights": weights.hexdigest()}
        self.out.write_text(json.dumps(record))
