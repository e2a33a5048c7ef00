"""``crossgeo demo``: write a small realistic scene, sample it, preview it and train a tiny model.

The scene and the training loop live in `crossgeo.demo`; this command chooses the
framework, prints what happened and where the files are (an absolute path), and the
follow-up commands to run from that folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossgeo.cli.common import CliError, declared_classes, make_sampler, one_line, progress
from crossgeo.cli.preview import choose_windows, render_preview

__all__ = ["DEFAULT_OUT", "add_parser", "follow_up_commands", "run"]

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
        "installed - train a tiny segmentation model for a few steps. Everything goes into one folder "
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
            print(f"{name} is not installed, so the demo skips training (pip install 'crossgeo[{name}]')")
            continue
        return name
    return "none"


def follow_up_commands(files: dict[str, Path]) -> list[str]:
    """What to try next, to be run from the demo folder (their outputs stay in it)."""
    from crossgeo.demo import SPLIT_WINDOWS_COMMAND

    config, vector = files["config"].name, files["config_vector"].name
    return [
        f"crossgeo validate {config}",
        f"crossgeo preview {config} -n 16 --seed 1 --out preview-seed1.png",
        f"crossgeo stats {config} --json stats.json",
        f"crossgeo index {config}",
        f"crossgeo validate {vector}",
        SPLIT_WINDOWS_COMMAND,
        f"crossgeo validate {files['config_split'].name} --section val_dataset",
    ]


def run(args: argparse.Namespace) -> int:
    from crossgeo.demo import train_tiny_model, write_demo_scene

    if args.steps < 0:
        raise CliError("--steps must be >= 0")
    out = Path(args.out).resolve()
    start = time.perf_counter()
    print(f"writing the demo scene to {out} ...")
    files = write_demo_scene(out)
    print(f"  {len(files)} files in {time.perf_counter() - start:.1f} s")

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
    sheet = render_preview(
        sampler,
        choose_windows(len(sampler), 16, 0),
        title=f"crossgeo demo: {Path(sampler.image_path).name} + {Path(sampler.mask_path).name}",
        progress_bar=False,
        class_names=options.class_names,
    )
    sheet.save(preview)
    print(f"  wrote {preview}")

    framework = _framework(args.framework)
    if framework != "none" and args.steps > 0:
        bar = progress(total=args.steps * args.batch_size, desc=f"training ({framework})", unit="patch", leave=True)

        def on_step(step: int, loss: float, accuracy: float, patches: int) -> None:
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.2f}")
            bar.update(patches)

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
            print(f"{framework} could not be used ({one_line(error)}); skipping training")
        else:
            print(
                f"trained a tiny {framework} model for {result.steps} steps: loss {result.first_loss:.3f} -> "
                f"{result.loss:.3f}, pixel accuracy {result.pixel_accuracy:.2f}"
            )
        finally:
            bar.close()
    print(f"\ndone in {time.perf_counter() - start:.1f} s. Files in {out}:")
    for key, path in {**files, "preview": preview}.items():
        print(f"  {key:<14} {path.name}")
    print("\nnext, try (from that folder, so the outputs stay in it):")
    print(f"  cd {out}")
    for line in follow_up_commands(files):
        print(f"  {line}")
    return 0
