"""The Ray tests' cluster: a local two-CPU cluster of each test module's own.

A module asks for it with ``pytestmark = pytest.mark.usefixtures("cluster")``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    """A fresh cluster per module (no earlier module's task, e.g. Ray Data's botocore import, ran in its
    workers); the module's functions travel by value (the workers cannot import a test module)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(request.module)
    yield
    ray.shutdown()
