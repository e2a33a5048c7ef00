"""`crossgeo.deferred.defer_import`: a module imported on its first use (rasterio's boto3 in Ray workers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

DEFERRED_CSV = textwrap.dedent(
    """
    import sys
    from crossgeo.deferred import defer_import

    assert "csv" not in sys.modules
    assert defer_import("csv") is True
    stand_in = sys.modules["csv"]
    import csv

    assert csv is stand_in and "_csv" not in sys.modules  # imported, not run yet
    assert list(csv.reader(["a,b"])) == [["a", "b"]]  # first use: the real module answers
    assert sys.modules["csv"] is not stand_in and sys.modules["csv"].reader is csv.reader
    assert defer_import("csv") is False  # already imported
    assert defer_import("no_such_module_here") is False and "no_such_module_here" not in sys.modules
    assert defer_import("xml.dom") is False  # submodules are left alone

    assert defer_import("email") is True
    import email.mime.text  # a submodule's import goes through the stand-in's __path__

    assert email.mime.text.MIMEText("x")["Content-Type"].startswith("text/plain")
    print("ok")
    """
)

DEFERRED_BOTO3 = textwrap.dedent(
    """
    import sys
    from crossgeo.deferred import defer_import

    assert defer_import("boto3")
    import rasterio
    from rasterio.session import AWSSession, Session

    assert "botocore" not in sys.modules  # rasterio imported without boto3
    assert Session.cls_from_path("s3://bucket/scene.tif") is AWSSession  # S3 paths still get boto3 sessions
    session = AWSSession(aws_access_key_id="id", aws_secret_access_key="secret", region_name="eu-west-1")
    assert session.get_credential_options()["AWS_ACCESS_KEY_ID"] == "id"
    assert "botocore" in sys.modules
    print("ok")
    """
)


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_deferred_module_is_imported_on_first_use() -> None:
    assert _run(DEFERRED_CSV) == "ok"


def test_deferred_boto3_keeps_rasterio_s3_sessions() -> None:
    pytest.importorskip("boto3")
    assert _run(DEFERRED_BOTO3) == "ok"


def test_reading_a_pickled_sampler_imports_neither_boto3_nor_pyarrow_compute(tmp_path) -> None:
    """What a Ray worker of ``write_chips(engine="ray")`` imports: the modules of a pickled sampler and its first
    read, boto3 deferred; pyarrow.compute (0.08 CPU s) is imported by the functions that parse windows tables."""
    import pickle

    from crossgeo import SceneSampler
    from crossgeo import testing as T

    scenes, mask = T.write_scene_catalogue(tmp_path, 2, size=64, windows=((0, 0), (32, 16)))
    (tmp_path / "sampler.pkl").write_bytes(pickle.dumps(SceneSampler(scenes, 32, mask_path=mask, n_classes=4)))
    code = textwrap.dedent(
        f"""
        import pickle, sys
        from crossgeo.deferred import defer_import

        defer_import("boto3")
        import crossgeo.chips

        sampler = pickle.loads(open({str(tmp_path / "sampler.pkl")!r}, "rb").read())
        assert sampler[1].image.shape[-2:] == (32, 32)
        print(sorted(m for m in ("botocore", "pyarrow.compute", "pandas") if m in sys.modules))
        """
    )
    assert _run(code) == "[]"
