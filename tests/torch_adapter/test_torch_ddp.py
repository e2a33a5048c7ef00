"""Two DDP ranks (gloo, CPU, loopback) through a DistributedSampler."""

from __future__ import annotations

import json
import socket

import torch
import torch.multiprocessing as mp
from torch_scene import DDP_WEIGHTS, WINDOWS, ddp_worker, torch_weights

from crossgeo.augment import to_model_inputs
from crossgeo.loading import epoch_order


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_each_window_once_per_epoch_across_ranks(scene, make_dataset, tmp_path):
    paths = {"image": scene.image_mbtiles, "mask": scene.mask_vrt, "windows": scene.windows_csv}
    mp.spawn(ddp_worker, args=(2, _free_port(), paths, str(tmp_path)), nprocs=2, join=True)
    ranks = json.loads((tmp_path / "seen.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1]

    reference = make_dataset(augmentation_list=[{"_target_": "albumentations.HorizontalFlip", "p": 0.5}], seed=3)
    orders = []
    for epoch in range(2):
        per_rank = [r["epochs"][epoch] for r in ranks]
        # The dataset's augmentation epoch followed sampler.set_epoch.
        assert [r["dataset_epoch"] for r in per_rank] == [epoch, epoch]
        windows = [tuple(w) for r in per_rank for w in r["windows"]]
        # Every window exactly once per epoch, split evenly over the ranks.
        assert sorted(windows) == sorted(WINDOWS)
        assert [len(r["windows"]) for r in per_rank] == [len(WINDOWS) // 2] * 2
        orders.append([tuple(w) for w in per_rank[0]["windows"]] + [tuple(w) for w in per_rank[1]["windows"]])
        # Each rank's augmentation is the single-process one for (seed, epoch, index).
        for r in per_rank:
            for window, total in zip(r["windows"], r["sums"]):
                image, _ = to_model_inputs(
                    reference.sampler[WINDOWS.index(tuple(window))], reference.augmentation, seed=3, epoch=epoch
                )
                expected = float((torch.from_numpy(image) * torch_weights()).sum())
                assert abs(total - expected) <= 1e-3 * abs(expected)
    # set_epoch changed the order.
    assert orders[0] != orders[1]
    # make_dataloader(weights=...) under DDP: rank r takes every second window of the shared draw.
    draw = [WINDOWS[i] for i in epoch_order(len(WINDOWS), 3, 5, weights=DDP_WEIGHTS)]
    for rank in (0, 1):
        assert [tuple(w) for w in ranks[rank]["weighted"]] == draw[rank::2]
