"""Rasters over HTTP and S3 through GDAL's virtual file systems, with injected faults.

Everything runs on 127.0.0.1: a byte-range file server (HTTP/COG case) and moto's S3
server behind a fault-injecting proxy. With GDAL's retry options (set by crossgeo), a
full epoch over faulty servers gives exactly the patches of the local files. A server
that stops answering fails a read in bounded time, and bytes damaged in transit are
fetched again once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio.shutil
from servers import FaultProxy, FileServer, running

import crossgeo.io
from crossgeo import PatchSampler, ReadError
from crossgeo import testing as T
from crossgeo.testing import CoordinateScene

SIZE = 64


def noisy_scene(scene: CoordinateScene) -> tuple[Path, Path, Path]:
    """A COG whose pixels do not compress (many range requests), a 4326 mask and windows."""
    rng = np.random.default_rng(0)
    cog = scene.path("noise.tif")
    data = rng.integers(0, 256, (3, scene.size, scene.size), dtype=np.uint8)
    tmp = T.write_raster(scene.path("noise_src.tif"), data, crs=scene.crs, transform=scene.transform)
    rasterio.shutil.copy(tmp, cog, driver="COG", blocksize=128)
    rows, cols = np.meshgrid(np.arange(0, scene.size - SIZE + 1, 48), np.arange(0, scene.size - SIZE + 1, 48))
    windows = scene.windows(rows.ravel(), cols.ravel())
    return cog, scene.lonlat_mask(), windows


def assert_same_epoch(local: PatchSampler, remote: PatchSampler) -> None:
    assert len(local) == len(remote)
    for i in range(len(local)):
        a, b = local[i], remote[i]
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # The retry count stays crossgeo's; only the wait between retries is shortened for tests.
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    monkeypatch.setenv("CPL_VSIL_CURL_CHUNK_SIZE", "16384")


def test_http_cog_with_faults_gives_the_local_epoch(scene: CoordinateScene) -> None:
    cog, mask, windows = noisy_scene(scene)
    local = PatchSampler(cog, mask, windows, SIZE, n_classes=4)
    with running(FileServer(scene.folder, fail_every=5)) as server:
        remote = PatchSampler(f"{server.url}/{cog.name}", f"{server.url}/{mask.name}", windows, SIZE, n_classes=4)
        assert_same_epoch(local, remote)
        remote.close()
    assert server.faults >= 3, server.faults  # 503s and dropped connections were really injected


def test_missing_remote_file_names_the_url(scene: CoordinateScene) -> None:
    with running(FileServer(scene.folder)) as server:
        url = f"{server.url}/nope.tif"
        with pytest.raises(OSError, match=rf"image_path '{url}' cannot be opened as a raster"):
            PatchSampler(url, scene.lonlat_mask(), scene.windows([0], [0]), SIZE)


def test_s3_through_moto_with_faults(scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    cog, mask, windows = noisy_scene(scene)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing-key",
            "AWS_SECRET_ACCESS_KEY": "testing-secret",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
        }.items():
            monkeypatch.setenv(key, value)
        s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
        s3.create_bucket(Bucket="imagery")
        for path in (cog, mask):
            s3.upload_file(str(path), "imagery", f"scene/{path.name}")
        local = PatchSampler(cog, mask, windows, SIZE, n_classes=4)
        with running(FaultProxy((host, port), fail_every=5)) as proxy:
            monkeypatch.setenv("AWS_S3_ENDPOINT", proxy.url.removeprefix("http://"))
            remote = PatchSampler(
                f"s3://imagery/scene/{cog.name}", f"/vsis3/imagery/scene/{mask.name}", windows, SIZE, n_classes=4
            )
            assert_same_epoch(local, remote)
            remote.close()
            with pytest.raises(OSError, match=r"s3://imagery/scene/missing\.tif") as missing:
                PatchSampler("s3://imagery/scene/missing.tif", mask, windows, SIZE)
        assert proxy.faults >= 3, proxy.faults
    finally:
        moto.stop()
    # Credentials come from the environment and never show up in what crossgeo says.
    for text in (repr(remote), str(missing.value)):
        assert "testing-secret" not in text and "testing-key" not in text


# ---------------------------------------------------------------------- stalled servers, damaged bytes


def deflate_cog(scene: CoordinateScene) -> Path:
    """A pixel-interleaved DEFLATE COG of noise in 128-pixel blocks (damaged bytes fail to decode)."""
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (3, scene.size, scene.size), dtype=np.uint8)
    tmp = T.write_raster(scene.path("deflate_src.tif"), data, crs=scene.crs, transform=scene.transform)
    cog = scene.path("deflate.tif")
    rasterio.shutil.copy(tmp, cog, driver="COG", blocksize=128, compress="deflate")
    return cog


def block_bytes(path: Path, x: int, y: int) -> tuple[int, int]:
    """The byte range ``[start, stop)`` of block (x, y) in a tiled GeoTIFF."""
    with rasterio.open(path) as src:
        start = int(src.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1))
        return start, start + int(src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1))


def in_new_thread(work: Any, limit: float) -> dict[str, Any]:
    """Run ``work`` in a new thread (it enters crossgeo's GDAL Env with the environment as it is now)."""
    result: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            result["value"] = work()
        except Exception as error:
            result["error"] = error
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still blocked after {limit} s"
    return result


def test_a_server_that_stops_answering_fails_the_read_within_the_bound(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GDAL_HTTP_LOW_SPEED_TIME", "1")  # the user's setting wins over crossgeo's 10 s
    cog = deflate_cog(scene)
    windows = scene.windows([0, 256], [0, 256])
    with running(FileServer(scene.folder)) as server:
        url = f"{server.url}/{cog.name}"
        sampler = PatchSampler(url, scene.lonlat_mask(), windows, SIZE, n_classes=4)
        server.hang.set()  # from now on requests are accepted and never answered

        seen: dict[str, Any] = {}

        def read() -> None:
            seen["config"] = crossgeo.io.effective_gdal_config()
            seen["bound"] = crossgeo.io.remote_wait_bound()
            sampler[1]

        result = in_new_thread(read, limit=30)
        hung = server.hung
    error = result["error"]
    assert isinstance(error, ReadError), error
    assert url in str(error) and "The server sent nothing for 1 s (GDAL_HTTP_LOW_SPEED_TIME" in str(error)
    assert hung >= 1  # the read really met the silent server
    # The reading thread's effective configuration gives the bound: 4 requests of at most 1 s ...
    assert seen["config"]["GDAL_HTTP_LOW_SPEED_TIME"] == 1 and seen["bound"] == 4.0
    # ... and the clock agrees (a little slack for a loaded machine).
    assert result["elapsed"] <= seen["bound"] + 1.5, result["elapsed"]


_DEFAULT_BOUND = """
import json, crossgeo.io
print(json.dumps({"bound": crossgeo.io.remote_wait_bound(), "config": crossgeo.io.effective_gdal_config()}))
"""


def effective_in_fresh_process(**environment: str) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GDAL_", "CPL_", "VSI_"))}
    done = subprocess.run(
        [sys.executable, "-c", _DEFAULT_BOUND],
        capture_output=True,
        text=True,
        cwd=root,
        env={**clean, "PYTHONPATH": str(root), **environment},
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def test_by_default_a_stalled_remote_read_ends_within_60_seconds() -> None:
    default = effective_in_fresh_process()
    assert default["config"]["GDAL_HTTP_LOW_SPEED_TIME"] == 10
    assert default["bound"] == 40.0 < 60
    # A user's environment variable wins over crossgeo's value (and GDAL_HTTP_TIMEOUT counts with its retries).
    slow = effective_in_fresh_process(GDAL_HTTP_LOW_SPEED_TIME="30")
    assert slow["bound"] == 120.0
    capped = effective_in_fresh_process(GDAL_HTTP_LOW_SPEED_TIME="0", GDAL_HTTP_TIMEOUT="2")
    # 4 attempts of 2 s and three delays of at most 0.5, 1.25 and 3.125 s, for each of 4 requests
    assert capped["bound"] == pytest.approx(4 * (4 * 2 + 0.5 + 1.25 + 3.125))


def test_bytes_damaged_in_transit_are_fetched_again_once(scene: CoordinateScene) -> None:
    cog = deflate_cog(scene)
    mask = scene.lonlat_mask()
    windows = scene.windows([128, 384], [128, 384])  # block (1, 1), then block (3, 3)
    local = PatchSampler(cog, mask, windows, SIZE, n_classes=4)
    with running(FileServer(scene.folder)) as server:
        remote = PatchSampler(f"{server.url}/{cog.name}", mask, windows, SIZE, n_classes=4)
        server.damage(cog.name, *block_bytes(cog, 1, 1), times=1)  # the next response only
        patch = remote[0]
        assert server.damaged == 1
        np.testing.assert_array_equal(patch.image, local[0].image)
        np.testing.assert_array_equal(remote[0].image, local[0].image)  # and again, from the cache
        server.damage(cog.name, *block_bytes(cog, 3, 3), times=1000)  # damaged for good
        with pytest.raises(ReadError, match=rf"image {server.url}/{cog.name} failed for the window row_off=384"):
            remote[1]
        assert server.damaged == 1 + 2  # the read and its one retry
        np.testing.assert_array_equal(remote[0].image, local[0].image)  # the rest still reads
        remote.close()


def test_a_users_gdal_variable_wins_in_a_new_thread_after_crossgeo_configured_the_main_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crossgeo.io.ensure_gdal_env()  # the main thread's Env sets crossgeo's values process-wide
    monkeypatch.setenv("GDAL_HTTP_LOW_SPEED_TIME", "7")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "1")
    result = in_new_thread(crossgeo.io.effective_gdal_config, limit=30)
    assert result["value"]["GDAL_HTTP_LOW_SPEED_TIME"] == 7 and result["value"]["GDAL_HTTP_MAX_RETRY"] == 1
