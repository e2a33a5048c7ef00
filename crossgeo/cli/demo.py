"""``crossgeo demo``: write a small realistic scene, sample it, preview it, train a tiny model and predict.

The scene, the training loop and the prediction live in `crossgeo.demo`; this command
chooses the framework, prints what happened and where the files are (an absolute path),
draws the scene next to its reference and the prediction (``prediction.png``), and the
follow-up commands to run from that folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossgeo.cli.common import (
    CliError,
    class_colours,
    declared_classes,
    install_hint,
    make_sampler,
    one_line,
    progress,
    require,
)
from crossgeo.cli.preview import (
    FONT_SIZE,
    MARGIN,
    TITLE_LINE,
    TITLE_TOP,
    blend,
    choose_windows,
    display_rgb,
    draw_title,
    render_preview,
    save_png,
    title_lines,
)
from crossgeo.files import atomic_output

__all__ = ["DEFAULT_OUT", "PANEL", "add_parser", "follow_up_commands", "run", "scene_picture"]

PANEL = 512
"""Width and height of each panel of ``prediction.png`` (image, reference, prediction)."""

DEFAULT_OUT = "crossgeo-demo"
"""The demo's folder, relative to the working directory."""


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write a small scene, sample it and train a tiny model",
        description="Write a small realistic scene (GeoTIFF and MBTiles image, a colour-coded mask in EPSG:4326 at "
        "another resolution, windows as CSV and GeoPackage, YAML configs with the original "
        "MBTilesCropsGeoTifMaskDataset keys), sample it, write a preview and - when torch or tensorflow is "
        "installed - train a tiny segmentation model for a few steps, predict the whole scene with it, print its "
        "pixel accuracy and mean IoU and draw image, reference and prediction side by side (prediction.png). "
        "Everything goes into one folder "
        f"(default: ./{DEFAULT_OUT}); the command prints its absolute path and what to run next from there.",
        epilog="example:\n  crossgeo demo\n  crossgeo demo --framework none --out /tmp/crossgeo-demo",
    )
    parser.add_argument(
        "--framework",
        choices=("auto", "torch", "tensorflow", "none"),
        default="auto",
        help="framework for the training steps (default: auto = torch, else tensorflow, else none)",
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help="folder for the scene (default: ./%(default)s)"
    )
    parser.add_argument("--steps", type=int, default=40, metavar="N", help="training steps (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=8, metavar="N", help="patches per step (default: %(default)s)"
    )
    return parser


def _framework(requested: str) -> str:
    """The framework to train with: the requested one, or for "auto" torch, else tensorflow, else "none"."""
    order = ["torch", "tensorflow"] if requested == "auto" else [requested]
    for name in order:
        if name == "none":
            return "none"
        if importlib.util.find_spec(name) is None:
            print(
                f"{name} is not installed, so the demo skips training (in a clone of crossgeo: pip install '.[{name}]')"
            )
            continue
        return name
    return "none"


def scene_picture(sampler: Any, prediction_path: Path, title: str = "") -> Any:
    """A Pillow image of the whole scene: the image, the reference mask and the prediction, side by side.

    Everything is read through the library on the image's grid: the image window by window
    (`PatchSampler.read_image`), the mask as one rectangle (`PatchSampler.read_mask`) and
    the prediction by `crossgeo.evaluation.read_classes`; classes are tinted as in ``preview``
    (class 0 untinted, no data hatched). Each panel is scaled to `PANEL` pixels.
    """
    from crossgeo.evaluation import read_classes
    from crossgeo.grid import axis_offsets

    Image = require("PIL.Image", "Pillow")
    ImageDraw = require("PIL.ImageDraw", "Pillow")
    ImageFont = require("PIL.ImageFont", "Pillow")
    grid, size = sampler.grid, sampler.patch_size
    rows, cols = axis_offsets(grid.height, size, size), axis_offsets(grid.width, size, size)
    windows = [(int(r), int(c)) for r in rows for c in cols]
    image = np.zeros((len(sampler.selected_bands), max(grid.height, size), max(grid.width, size)), sampler.image_dtype)
    predicted = np.zeros(image.shape[1:], dtype=np.int64)
    predicted_valid = np.zeros(image.shape[1:], dtype=bool)
    for (r, c), (classes, valid) in zip(windows, read_classes(prediction_path, grid, windows, size)):
        image[:, r : r + size, c : c + size] = sampler.read_image(r, c)[0]
        predicted[r : r + size, c : c + size] = classes
        predicted_valid[r : r + size, c : c + size] = valid
    h, w = grid.height, grid.width
    reference, reference_valid = sampler.read_mask(0, 0, h, w)
    picture = display_rgb([image[:, :h, :w]], sampler.image_dtype != np.uint8, sampler.image_info.raster.nodata)[0]
    shown = sorted({int(v) for v in np.unique(reference)} | {int(v) for v in np.unique(predicted)})
    colours = class_colours(sampler, shown)
    panels = [
        ("image", picture),
        ("reference (mask)", blend(picture, reference, ~reference_valid, colours, 0.6, {0})),
        ("prediction", blend(picture, predicted[:h, :w], ~predicted_valid[:h, :w], colours, 0.6, {0})),
    ]
    scale = PANEL / max(h, w)
    pw, ph = max(1, round(w * scale)), max(1, round(h * scale))
    width = MARGIN + 3 * (pw + MARGIN)
    lines = title_lines(title, width)  # wrapped: a narrow (tall) scene never cuts its title
    top = TITLE_TOP + len(lines) * TITLE_LINE + FONT_SIZE + 12
    sheet = Image.new("RGB", (width, top + ph + MARGIN), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=FONT_SIZE)
    draw_title(draw, lines)
    for k, (name, array) in enumerate(panels):
        x = MARGIN + k * (pw + MARGIN)
        sheet.paste(Image.fromarray(array).resize((pw, ph), Image.Resampling.BOX), (x, top))
        draw.text((x, top - FONT_SIZE - 4), name, fill=(0, 0, 0), font=font)
    return sheet


def follow_up_commands(files: dict[str, Path]) -> list[str]:
    """What to try next, to be run from the demo folder (their outputs stay in it).

    With a ``prediction`` among ``files`` (after training), also evaluating it and previewing it.
    """
    from crossgeo.demo import SPLIT_WINDOWS_COMMAND

    config, vector = files["config"].name, files["config_vector"].name
    if "prediction" in files:
        prediction = files["prediction"].name
        after = [
            f"crossgeo evaluate {prediction} {config} --json metrics.json",
            f"crossgeo preview {config} --prediction {prediction} --out compare.png",
        ]
    else:
        after = []
    return [
        f"crossgeo validate {config}",
        f"crossgeo preview {config} -n 16 --seed 1 --out preview-seed1.png",
        f"crossgeo stats {config} --json stats.json",
        f"crossgeo index {config}",
        f"crossgeo validate {vector}",
        SPLIT_WINDOWS_COMMAND,
        f"crossgeo validate {files['config_split'].name} --section val_dataset",
        *after,
    ]


def _predict(result: Any, sampler: Any, out: Path) -> dict[str, Path]:
    """Predict the scene with the trained model, print its accuracy and draw ``prediction.png``."""
    from crossgeo.demo import predict_scene

    k = max(declared_classes(sampler)) + 1
    t0 = time.perf_counter()
    prediction, metrics = predict_scene(result, sampler, out / "prediction.tif", n_classes=k)
    print(
        f"predicted the whole scene ({prediction.windows} windows) in {time.perf_counter() - t0:.1f} s: "
        f"pixel accuracy {metrics.accuracy:.2f}, mean IoU {metrics.mean_iou:.2f} against the mask"
    )
    picture = out / "prediction.png"
    name = Path(sampler.image_path).name
    title = f"crossgeo demo: {name}, its mask and the tiny {result.framework} model's prediction"
    with atomic_output(picture, option="demo file") as temp:
        save_png(scene_picture(sampler, prediction.path, title), temp, title)
    print(f"  wrote {picture} (image, reference, prediction)")
    return {"prediction": prediction.path, "prediction_png": picture}


def run(args: argparse.Namespace) -> int:
    from crossgeo.demo import train_tiny_model, write_demo_scene

    if args.steps < 0:
        raise CliError("--steps must be >= 0")
    out = Path(args.out).resolve()
    start = time.perf_counter()
    print(f"writing the demo scene to {out} ...")
    files = write_demo_scene(out)
    print(f"  the scene's {len(files)} files in {time.perf_counter() - start:.1f} s")

    sampler, options = make_sampler(argparse.Namespace(config=str(files["config"]), section=None))
    print(
        f"sampler: {len(sampler)} windows of {sampler.patch_size} px on {Path(sampler.image_path).name} "
        f"({sampler.grid.width} x {sampler.grid.height}, {sampler.grid.crs}); mask {Path(sampler.mask_path).name} "
        f"{'read on the same grid' if sampler.aligned else 'warped from EPSG:4326'}, covers {sampler.mask_coverage:.0%}"
    )
    t0 = time.perf_counter()
    for i in progress(range(len(sampler)), desc="sampling", unit="patch"):
        sampler[i]
    rate = len(sampler) / max(time.perf_counter() - t0, 1e-9)
    print(f"  read every window once: {rate:.0f} patches/s")

    preview = out / "preview.png"
    title = f"crossgeo demo: {Path(sampler.image_path).name} + {Path(sampler.mask_path).name}"
    sheet = render_preview(
        sampler, choose_windows(len(sampler), 16, 0), title=title, progress_bar=False, class_names=options.class_names
    )
    with atomic_output(preview, option="demo file") as temp:
        save_png(sheet, temp, title)
    print(f"  wrote {preview}")

    written: dict[str, Path] = {}
    framework = _framework(args.framework)
    if framework != "none" and args.steps > 0:
        bar = progress(total=args.steps * args.batch_size, desc=f"training ({framework})", unit="patch", leave=True)

        def on_step(step: int, loss: float, accuracy: float, patches: int) -> None:
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.2f}")
            bar.update(patches)

        result: Any = None
        try:
            result = train_tiny_model(
                framework,
                sampler,
                steps=args.steps,
                batch_size=args.batch_size,
                n_classes=max(declared_classes(sampler)) + 1,
                augmentation_list=options.adapter.get("augmentation_list"),
                on_step=on_step,
            )
        except ImportError as error:
            print(
                f"{framework} could not be used ({one_line(error)}); skipping training. To train, {install_hint(error)}"
            )
        else:
            print(
                f"trained a tiny {framework} model for {result.steps} steps: loss {result.first_loss:.3f} -> "
                f"{result.loss:.3f}, pixel accuracy {result.pixel_accuracy:.2f}"
            )
        finally:
            bar.close()
        if result is not None:
            written.update(_predict(result, sampler, out))
    listed = {**files, "preview": preview, **written}
    print(f"\ndone in {time.perf_counter() - start:.1f} s. {len(listed)} files in {out}:")
    for key, path in listed.items():
        print(f"  {key:<14} {path.name}")
    print("\nnext, try (from that folder, so the outputs stay in it):")
    print(f"  cd {out}")
    for line in follow_up_commands({**files, **written}):
        print(f"  {line}")
    return 0
