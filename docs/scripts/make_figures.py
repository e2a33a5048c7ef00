"""Draw the documentation's figures: a mask warped onto an image grid, and the home page's preview.

    python docs/scripts/make_figures.py [REAL_DATA_DIR]

Reads two real third-party rasters (``../shared/data/real``, or CROSSGEO_REAL_DATA, or the
folder given): ``RGB.byte.tif`` (Landsat RGB, EPSG:32618, 300 m pixels) as the image and
``world.byte.tif`` (land = 1 / water = 0, EPSG:4326, 0.125 degree pixels) as the mask, and
writes ``docs/images/mask-warp.png`` and ``docs/images/preview.png`` (the contact sheet of
``crossgeo preview``, drawn by its own function with a title for readers instead of the
command's file names). The warped mask is what crossgeo itself returns
(:meth:`crossgeo.PatchSampler.read` of one window covering the image), not a re-drawing.
Needs Pillow (``pip install ".[cli]"`` in the clone).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFont
from rasterio.warp import transform as warp_transform
from rasterio.windows import from_bounds

from crossgeo import PatchSampler
from crossgeo.testing import write_windows_table

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "images" / "mask-warp.png"
PREVIEW = HERE.parent / "images" / "preview.png"
PREVIEW_TITLE = "Landsat RGB (UTM 18N, 300 m) with a land mask (EPSG:4326, 0.125°) on each patch"
REAL_DATA = Path(os.environ.get("CROSSGEO_REAL_DATA") or HERE.parents[2] / "shared" / "data" / "real")

WATER, LAND = (30, 60, 150), (235, 170, 40)
PANEL = 400
#: Text size of the captions and legend: the 3-panel figure (~1270 px) is shown at ~55 % on a 1280-px
#: screen's page and at ~28 % on a 390-px phone, so 40-px text reads as ~22 px and ~11 px. The captions
#: are a few words; the page's caption under the figure says the rest.
TEXT = 40
MARGIN, TITLE = 18, 2 * TEXT + 24


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def classes_rgb(classes: np.ndarray) -> np.ndarray:
    return np.where(classes[..., None] == 1, np.array(LAND, np.uint8), np.array(WATER, np.uint8)).astype(np.uint8)


def footprint_lonlat(src: rasterio.DatasetReader, steps: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """The image's outline (densified edges of its pixel grid) in longitude/latitude."""
    h, w = src.height, src.width
    t = np.linspace(0, 1, steps)
    cols = np.concatenate([t * w, np.full(steps, w), (1 - t) * w, np.zeros(steps)])
    rows = np.concatenate([np.zeros(steps), t * h, np.full(steps, h), (1 - t) * h])
    xs, ys = src.transform @ (cols, rows)
    lon, lat = warp_transform(src.crs, "EPSG:4326", xs, ys)
    return np.asarray(lon), np.asarray(lat)


def panel_mask(image: rasterio.DatasetReader, mask: rasterio.DatasetReader) -> Image.Image:
    """The mask on its own grid (EPSG:4326), its pixel edges, and the image footprint."""
    lon, lat = footprint_lonlat(image)
    pad = 0.5
    window = from_bounds(lon.min() - pad, lat.min() - pad, lon.max() + pad, lat.max() + pad, mask.transform)
    window = window.round_offsets().round_lengths()
    data = mask.read(1, window=window)
    scale = PANEL // max(data.shape)
    picture = Image.fromarray(classes_rgb(data)).resize((data.shape[1] * scale, data.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    for i in range(data.shape[1] + 1):
        draw.line([(i * scale, 0), (i * scale, picture.height)], fill=(0, 0, 0), width=1)
    for j in range(data.shape[0] + 1):
        draw.line([(0, j * scale), (picture.width, j * scale)], fill=(0, 0, 0), width=1)
    inverse = ~mask.window_transform(window)
    cols, rows = inverse @ (lon, lat)
    draw.line([(float(c) * scale, float(r) * scale) for c, r in zip(cols, rows)], fill=(255, 255, 255), width=3)
    return picture


def warped(image_path: Path, mask_path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole image and the mask brought onto its grid, by crossgeo."""
    with tempfile.TemporaryDirectory() as tmp:
        crops = write_windows_table(Path(tmp) / "one.csv", [0], [0])
        sampler = PatchSampler(image_path, mask_path, crops, size, n_classes=2)
        patch = sampler.read(0, 0)
        sampler.close()
    return patch.image, patch.mask


def blend(rgb: np.ndarray, classes: np.ndarray, valid: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    tint = classes_rgb(classes).astype(np.float32)
    out = rgb.astype(np.float32)
    out[valid] = (1 - alpha) * out[valid] + alpha * tint[valid]
    return out.clip(0, 255).astype(np.uint8)


def draw_figure(real: Path, out: Path = OUT) -> Path:
    image_path, mask_path = real / "RGB.byte.tif", real / "world.byte.tif"
    with rasterio.open(image_path) as image, rasterio.open(mask_path) as mask:
        left = panel_mask(image, mask)
        height, width = image.height, image.width
        image_res, mask_res = image.res[0], mask.res[0]
    pixels, classes = warped(image_path, mask_path, max(height, width))
    rgb = np.moveaxis(pixels, 0, -1)[:height, :width]
    classes = classes[:height, :width]
    valid = np.any(rgb > 0, axis=-1)  # the image's nodata (0) frame is left untinted

    scale = PANEL / max(height, width)
    middle = Image.fromarray(blend(rgb, classes, valid)).resize(
        (round(width * scale), round(height * scale)), Image.LANCZOS
    )
    # Zoom: 48 x 48 image pixels where a mask cell corner meets the coast, 7.5x, with the pixel grid.
    r0, c0, n = 300, 420, 48
    zoom_rgb = blend(rgb[r0 : r0 + n, c0 : c0 + n], classes[r0 : r0 + n, c0 : c0 + n], valid[r0 : r0 + n, c0 : c0 + n])
    z = PANEL // n
    right = Image.fromarray(zoom_rgb).resize((n * z, n * z), Image.NEAREST)
    draw = ImageDraw.Draw(right)
    for i in range(0, n + 1, 4):
        draw.line([(i * z, 0), (i * z, n * z)], fill=(255, 255, 255), width=1)
        draw.line([(0, i * z), (n * z, i * z)], fill=(255, 255, 255), width=1)
    box = [round(c0 * scale), round(r0 * scale), round((c0 + n) * scale), round((r0 + n) * scale)]
    ImageDraw.Draw(middle).rectangle(box, outline=(255, 255, 255), width=2)

    panels = [
        (left, f"1. mask grid\n{mask_res}° cells"),
        (middle, f"2. on the image\n{image_res:.0f} m pixels"),
        (right, f"3. zoom x{z}\n{n} x {n} pixels"),
    ]
    width_total = sum(p.width for p, _ in panels) + MARGIN * (len(panels) + 1)
    height_total = max(p.height for p, _ in panels) + 3 * MARGIN + TITLE + TEXT
    sheet = Image.new("RGB", (width_total, height_total), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    x = MARGIN
    for picture, caption in panels:
        draw.multiline_text((x, MARGIN), caption, fill=(0, 0, 0), font=font(TEXT), spacing=8)
        sheet.paste(picture, (x, MARGIN + TITLE))
        x += picture.width + MARGIN
    legend_y, lx = height_total - MARGIN - TEXT, MARGIN
    for colour, name in ((WATER, "water"), (LAND, "land"), (None, "image outline")):
        if colour is None:  # the outline drawn on panel 1: a white line, shown boxed
            draw.rectangle([lx, legend_y, lx + TEXT, legend_y + TEXT], fill=WATER, outline=(0, 0, 0))
            draw.line([(lx + 4, legend_y + TEXT // 2), (lx + TEXT - 4, legend_y + TEXT // 2)], fill="white", width=5)
        else:
            draw.rectangle([lx, legend_y, lx + TEXT, legend_y + TEXT], fill=colour, outline=(0, 0, 0))
        draw.text((lx + TEXT + 12, legend_y - TEXT // 8), name, fill=(0, 0, 0), font=font(TEXT))
        lx += TEXT + 12 + int(draw.textlength(name, font=font(TEXT))) + 2 * TEXT
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out


def draw_preview(real: Path, out: Path = PREVIEW, size: int = 128, count: int = 6) -> Path:
    """``crossgeo preview``'s contact sheet of ``count`` windows lying wholly on image data.

    Six tiles in three columns keep the sheet about 420 px wide: shown at its own size on a wide
    screen and barely scaled on a phone, so its 12-px captions stay readable on both."""
    from crossgeo.cli.preview import render_preview

    with rasterio.open(real / "RGB.byte.tif") as src:
        valid = src.read(1) > 0  # the scene's nodata frame is 0
    step = size // 2
    inside = [
        (row, col)
        for row in range(0, valid.shape[0] - size + 1, step)
        for col in range(0, valid.shape[1] - size + 1, step)
        if valid[row : row + size, col : col + size].all()
    ]
    chosen = [inside[round(i * (len(inside) - 1) / (count - 1))] for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp:
        rows, cols = zip(*chosen)
        crops = write_windows_table(Path(tmp) / "windows.csv", rows, cols)
        sampler = PatchSampler(real / "RGB.byte.tif", real / "world.byte.tif", crops, size, n_classes=2)
        sheet = render_preview(
            sampler, range(len(sampler)), title=PREVIEW_TITLE, progress_bar=False, class_names={0: "water", 1: "land"}
        )
        sampler.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else REAL_DATA
    if not (folder / "RGB.byte.tif").exists():
        sys.exit(f"the real rasters are not in {folder}; pass their folder or set CROSSGEO_REAL_DATA")
    print(draw_figure(folder))
    print(draw_preview(folder))
