"""The core imports no deep-learning framework; the public API is where the README says."""

from __future__ import annotations

import subprocess
import sys


def test_import_crossgeo_imports_no_framework() -> None:
    code = (
        "import sys, crossgeo, crossgeo.sampler, crossgeo.windows, crossgeo.masks, crossgeo.io, crossgeo.grid, "
        "crossgeo.config, crossgeo.augment, crossgeo.testing\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'tensorflow', 'keras', 'jax'})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_public_api() -> None:
    import crossgeo

    assert issubclass(crossgeo.ConfigError, ValueError) and issubclass(crossgeo.ConfigError, crossgeo.CrossgeoError)
    assert issubclass(crossgeo.ReadError, OSError) and issubclass(crossgeo.OptionError, TypeError)
    assert issubclass(crossgeo.WindowError, ValueError) and issubclass(crossgeo.RasterError, ValueError)
    assert set(crossgeo.__all__) <= set(dir(crossgeo))
