"""The ``crossgeo`` command: demo, validate, preview, stats, index, windows, predict and evaluate.

Every command except ``demo`` takes a YAML configuration with the original
``MBTilesCropsGeoTifMaskDataset`` keys, either flat or under ``train_dataset:`` (see
`crossgeo.cli.common`). One module per command (``demo``, ``preview``, ``stats``,
``index``, ``validate``, ``predict``, ``evaluate``), each with ``add_parser(subparsers, parents)`` and
``run(args) -> exit status``, listed once in `crossgeo.cli.main.COMMANDS`.

Importing this package imports neither a framework nor the command's own dependencies
(PyYAML, tqdm, Pillow); those load when a command needs them.
"""

from crossgeo.cli.main import main

__all__ = ["main"]
