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
