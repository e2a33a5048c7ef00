"""crossgeo's benchmark suite (issue #6): ``python -m benchmarks`` or ``tox -e bench``.

Scenes are generated once into a cache folder (``~/.cache/crossgeo-bench`` or ``--cache``);
every figure reported is a *ratio* measured in one run, on the same windows and files, with
GDAL's block cache kept small so that reads really decompress (see :mod:`benchmarks.run`).
"""
