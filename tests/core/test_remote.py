"""Rasters over HTTP and S3 through GDAL's virtual file systems, with injected faults.

Everything runs on 127.0.0.1: a byte-range file server (HTTP/COG case) and moto's S3
server behind a fault-injecting proxy. With GDAL's retry options (set by crossgeo), a
full epoch over faulty servers gives exactly the patches of the local files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio.shutil
from conftest import Scene
from servers import FaultProxy, FileServer, running

from crossgeo import PatchSampler
from crossgeo import testing as T

SIZE = 64


def noisy_scene(scene: Scene) -> tuple[Path, Path, Path]:
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


def test_http_cog_with_faults_gives_the_local_epoch(scene: Scene) -> None:
    cog, mask, windows = noisy_scene(scene)
    local = PatchSampler(cog, mask, windows, SIZE, n_classes=4)
    with running(FileServer(scene.folder, fail_every=5)) as server:
        remote = PatchSampler(f"{server.url}/{cog.name}", f"{server.url}/{mask.name}", windows, SIZE, n_classes=4)
        assert_same_epoch(local, remote)
        remote.close()
    assert server.faults >= 3, server.faults  # 503s and dropped connections were really injected


def test_missing_remote_file_names_the_url(scene: Scene) -> None:
    with running(FileServer(scene.folder)) as server:
        url = f"{server.url}/nope.tif"
        with pytest.raises(OSError, match=rf"image_path '{url}' cannot be opened as a raster"):
            PatchSampler(url, scene.lonlat_mask(), scene.windows([0], [0]), SIZE)


def test_s3_through_moto_with_faults(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
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
