"""``crossgeo predict``: run a model file over a configuration's whole image and write a GeoTIFF.

The image, ``patch_size``, ``selected_bands`` and ``image_dtype`` come from the configuration
(so the model sees images prepared as in training); the number of classes it names is checked
against the model's outputs. The model file's framework is read from the file
(`crossgeo.models.model_file_framework`) and loaded by that framework's adapter through its
safe path only: ``crossgeo.torch.load_model`` (``torch.jit.load``) or
``crossgeo.keras.load_model`` (``safe_mode=True``). Frameworks are imported only here, when the
command runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossgeo.cli.common import (
    EXAMPLE_CONFIG,
    CliError,
    add_config_arguments,
    class_count,
    config_of,
    dataset_values,
    one_line,
    split_options,
)
from crossgeo.errors import ConfigError
from crossgeo.files import check_not_input, input_paths

__all__ = ["add_parser", "load_predictor", "run"]

FRAMEWORK_NAMES = {"torch": "torch (torch.export or TorchScript)", "keras": "Keras"}
INSTALL = {"torch": "pip install 'crossgeo[torch]'", "keras": "pip install 'crossgeo[tensorflow]'"}


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="predict a configuration's whole image with a model file",
        description="Run a model over the configuration's whole image in windows of its patch_size (images "
        "prepared as in training: selected_bands, image_dtype, uint8 / 255 or uint16 / 65535), blend overlapping "
        "windows and write a GeoTIFF on the image's grid (same CRS, transform and size). The model is a "
        "torch.export program (torch.export.save, .pt2), a TorchScript file (torch.jit.save) or a Keras .keras "
        "file (model.save); its framework is read from the "
        "file. Model files are code: they are loaded only through the frameworks' safe paths (a .pt2 checked for "
        "pickled data and non-operator code, then torch.export.load; torch.jit.load; "
        "keras.saving.load_model with safe_mode=True), never by unpickling arbitrary objects, so torch.save files "
        "and legacy .h5 files are refused with how to export a loadable one.",
        epilog="example:\n"
        "  crossgeo predict config.yaml --model model.pt --out prediction.tif\n"
        "  crossgeo predict config.yaml --model model.keras --out prediction.tif --overlap 64 --tta flips --cog\n"
        "  crossgeo evaluate prediction.tif config.yaml\n\n"
        "exporting a model file:\n"
        "  torch: torch.export.save(torch.export.export(model.eval(), (example,)), 'model.pt2')\n"
        "         (or TorchScript, deprecated by torch: torch.jit.script(model).save('model.pt'))\n"
        "  Keras: model.save('model.keras')\n\n" + EXAMPLE_CONFIG,
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--model", required=True, metavar="FILE", help="torch.export (.pt2), TorchScript (.pt) or Keras (.keras) file"
    )
    parser.add_argument("--out", default="prediction.tif", metavar="FILE", help="output GeoTIFF (default: %(default)s)")
    parser.add_argument(
        "--overlap", type=int, default=0, metavar="PX", help="pixels shared by neighbouring windows (default: 0)"
    )
    parser.add_argument(
        "--blend",
        choices=("linear", "none"),
        default="linear",
        help="overlapping scores: linear = tent weights, none = nearest window centre (default: %(default)s)",
    )
    parser.add_argument(
        "--tta",
        choices=("none", "flips", "d4"),
        default="none",
        help="test-time augmentation: flips (4) or d4 (8 flips/rotations), averaged (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        choices=("class", "scores", "probabilities"),
        default="class",
        help="class = argmax (uint8, nodata 255), scores = K float32 bands, probabilities = softmax as uint8 "
        "0-254 (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="windows per model call (default: 8)")
    parser.add_argument("--cog", action="store_true", help="write a Cloud-Optimized GeoTIFF with overviews")
    parser.add_argument(
        "--compress",
        choices=("deflate", "zstd"),
        default="deflate",
        help="GeoTIFF compression: deflate = readable everywhere, zstd = faster to write, needs a reader with zstd "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the output file (--out) if it exists; never an input (the image, the mask, the config)",
    )
    parser.add_argument(
        "--framework",
        choices=("auto", "torch", "keras"),
        default="auto",
        help="the model file's framework; auto = read from the file (default: %(default)s)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0 (default: %(default)s)")
    return parser


def load_predictor(path: str, framework: str = "auto", device: str = "cpu") -> tuple[str, Any, Any]:
    """``(framework, model, the adapter's predict_raster)`` of a model file, loaded through its framework's safe path.

    A file of another framework than ``framework`` (unless "auto"), a file neither framework
    saves safely, and a framework that is not installed are each a `CliError` naming
    ``--model`` and the fix.
    """
    from crossgeo.models import model_file_framework

    found = model_file_framework(path, option="--model")
    if framework not in ("auto", found):
        raise CliError(
            f"--model {path!r} is a {FRAMEWORK_NAMES[found]} model file, but --framework {framework} was given; "
            f"pass --framework {found} (or auto), or give a {FRAMEWORK_NAMES[framework]} file"
        )
    try:
        adapter: Any = importlib.import_module("crossgeo.torch" if found == "torch" else "crossgeo.keras")
    except ImportError as error:
        backend = ""
        if found == "keras" and importlib.util.find_spec("keras") and importlib.util.find_spec("torch"):
            backend = "; or run Keras on the installed torch: set the environment variable KERAS_BACKEND=torch"
        raise CliError(
            f"--model {path!r} is a {FRAMEWORK_NAMES[found]} model file, but "
            f"{'torch' if found == 'torch' else 'Keras/TensorFlow'} cannot be imported here; install it: "
            f"{INSTALL[found]}{backend} ({type(error).__name__}: {one_line(error)})"
        ) from error
    model = (
        adapter.load_model(path, device=device, option="--model")
        if found == "torch"
        else adapter.load_model(path, option="--model")
    )
    return found, model, adapter.predict_raster


def _image_label(image: Any) -> str:
    """The image as the command names it: the file's name, or each source's (several sources stacked)."""
    if isinstance(image, dict):
        return "the sources " + ", ".join(str(name) for name in image)
    if isinstance(image, (list, tuple)):
        paths = [item.get("path", "?") if isinstance(item, dict) else item for item in image]
        return "the sources " + ", ".join(Path(str(p)).name for p in paths)
    return Path(str(image)).name


def run(args: argparse.Namespace) -> int:
    from crossgeo.io import check_output_path

    where = str(args.config)
    options = split_options(config_of(args), where)
    values = dataset_values(options, where)
    try:  # before the model is loaded: a refused output should not wait for it
        inputs = {"--model": args.model, **input_paths(args.config, {**options.sampler, **values})}
        check_not_input(args.out, inputs, option="--out", advice="e.g. prediction.tif")
        check_output_path(args.out, overwrite=args.overwrite, option="--out")
    except ConfigError as error:
        raise CliError(str(error)) from error
    framework, model, predict = load_predictor(args.model, args.framework, args.device)
    image, size, k = values["image_path"], int(values["patch_size"]), class_count(values)
    kw: dict[str, Any] = {"device": args.device} if framework == "torch" else {}
    print(
        f"predicting {_image_label(image)} in {size} px windows (overlap {args.overlap}, tta {args.tta}) with "
        f"the {FRAMEWORK_NAMES[framework]} model {Path(args.model).name}, {k} classes ..."
    )
    start = time.perf_counter()
    result = predict(
        model,
        image,
        args.out,
        patch_size=size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        selected_bands=values["selected_bands"],
        image_dtype=values["image_dtype"],
        image_resampling=values["image_resampling"],
        reference=values["reference"],
        blend=args.blend,
        output=args.output,
        n_classes=k,
        tta=None if args.tta == "none" else args.tta,
        cog=args.cog,
        compress=args.compress,
        overwrite=args.overwrite,
        option="--out",
        progress=sys.stderr.isatty(),
        **kw,
    )
    seconds = time.perf_counter() - start
    print(
        f"wrote {result.path} ({result.output}, {result.n_classes} classes, nodata {result.nodata}): "
        f"{result.windows} windows in {seconds:.1f} s; {result.invalid_pixels} pixel(s) without image data"
    )
    return 0
