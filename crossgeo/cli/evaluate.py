"""``crossgeo evaluate``: compare a class prediction with the configuration's mask (or ``--mask``).

The reference mask, its ``color_map`` / ``n_classes`` decoding and the class names come from
the configuration, so a prediction is measured against the labels the model was trained on;
``--mask`` replaces the configuration's mask (e.g. a held-out scene's labels, decoded the same
way). The numbers are `crossgeo.evaluation.evaluate`'s, over the whole prediction.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossgeo.cli.common import (
    EXAMPLE_CONFIG,
    add_config_arguments,
    class_count,
    config_of,
    dataset_values,
    split_options,
)
from crossgeo.files import atomic_output, check_not_input, input_paths

if TYPE_CHECKING:
    from crossgeo.evaluation import Evaluation

__all__ = ["add_parser", "format_metrics", "metrics_json", "run"]


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="per-class IoU, F1, precision and recall of a prediction against the mask",
        description="Compare a class prediction (crossgeo predict --output class) with the configuration's mask, "
        "brought onto the prediction's grid exactly as the sampler reads it and decoded with its color_map / "
        "n_classes. Prints per class: IoU, F1, precision, recall and reference pixels, then pixel accuracy and "
        "mean IoU (over classes present in the reference or the prediction). Pixels without mask data, "
        "prediction nodata and the configuration's ignore value (a mask_fill_value that is not a class) are not "
        "counted; their numbers are printed. Class names come from class_names.",
        epilog="example:\n  crossgeo evaluate prediction.tif config.yaml --json metrics.json\n"
        "  crossgeo evaluate prediction.tif config.yaml --mask labels-2024.tif\n\n" + EXAMPLE_CONFIG,
    )
    parser.add_argument("prediction", help="the class GeoTIFF written by crossgeo predict")
    add_config_arguments(parser)
    parser.add_argument("--mask", metavar="FILE", help="reference mask instead of the configuration's mask_path")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers (and the confusion matrix) as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    from crossgeo.evaluation import evaluate

    where = str(args.config)
    options = split_options(config_of(args), where)
    values = dataset_values(options, where)
    k = class_count(values)
    fill = int(values["mask_fill_value"])
    color_map = values["color_map"]
    classes = {int(e[3]) for e in color_map} | {0} if color_map else set(range(k))
    mask = args.mask or values["mask_path"]
    if args.json:  # before the pixels are counted
        inputs = {"prediction": args.prediction, "--mask": args.mask, **input_paths(args.config, options.sampler)}
        check_not_input(args.json, inputs, option="--json")
    metrics = evaluate(
        args.prediction,
        mask,
        n_classes=k,
        color_map=color_map,
        mask_fill_value=None if fill in classes else fill,
    )
    print(f"{Path(args.prediction).name} against {Path(str(mask)).name}:")
    print(format_metrics(metrics, options.class_names))
    if args.json:
        out = Path(args.json)
        if out.parent != Path():
            out.parent.mkdir(parents=True, exist_ok=True)
        document = {"prediction": str(args.prediction), "mask": str(mask), **metrics_json(metrics, options.class_names)}
        with atomic_output(out, option="--json") as temp:
            temp.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def metrics_json(metrics: Evaluation, class_names: Mapping[int, str] | None = None) -> dict[str, Any]:
    """An `crossgeo.evaluation.Evaluation`'s numbers as JSON-ready values (NaN as null), with a record per class."""
    names = dict(class_names or {})
    confusion = metrics.confusion
    per_class = [
        {
            "class": c,
            "name": names.get(c),
            "iou": _number(metrics.iou[c]),
            "f1": _number(metrics.f1[c]),
            "precision": _number(metrics.precision[c]),
            "recall": _number(metrics.recall[c]),
            "reference_pixels": int(confusion[c].sum()),
            "predicted_pixels": int(confusion[:, c].sum()),
        }
        for c in range(len(confusion))
    ]
    return {
        "accuracy": _number(metrics.accuracy),
        "mean_iou": _number(metrics.mean_iou),
        "pixels": int(metrics.pixels),
        "ignored": {key: int(value) for key, value in metrics.ignored.items()},
        "classes": per_class,
        "confusion": confusion.tolist(),
        "confusion_axes": "rows = reference class, columns = predicted class",
    }


def format_metrics(metrics: Evaluation, class_names: Mapping[int, str] | None = None) -> str:
    """The per-class table, accuracy, mean IoU and the ignored pixels, as printed."""
    names = dict(class_names or {})
    confusion = metrics.confusion
    labels = [f"{c} {names[c]}" if c in names else str(c) for c in range(len(confusion))]
    width = max(8, *(len(label) for label in labels))

    def cell(value: float) -> str:
        return f"{'-':>9}" if math.isnan(value) else f"{value:9.3f}"

    lines = [f"  {'class':<{width}} {'IoU':>9} {'F1':>9} {'precision':>9} {'recall':>9} {'pixels':>12}"]
    for c, label in enumerate(labels):
        row = [cell(values[c]) for values in (metrics.iou, metrics.f1, metrics.precision, metrics.recall)]
        lines.append(f"  {label:<{width}} {' '.join(row)} {int(confusion[c].sum()):>12,}")
    lines.append(
        f"  pixel accuracy {metrics.accuracy:.4f}, mean IoU {metrics.mean_iou:.4f} over {metrics.pixels:,} pixels"
    )
    ignored = {key: value for key, value in metrics.ignored.items() if value}
    if ignored:
        counts = ", ".join(f"{key.replace('_', ' ')} {value:,}" for key, value in ignored.items())
        lines.append(f"  not counted: {counts}")
    lines.append(
        "  ('-': undefined: precision of a class never predicted, recall of a class not in the reference, "
        "IoU and F1 of a class in neither; pixels = reference pixels)"
    )
    return "\n".join(lines)
