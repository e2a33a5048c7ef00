"""STAC items -> a catalogue of scenes that `crossgeo.SceneSampler` reads.

`stac_scenes` makes one row per item: the listed asset keys become the scene's image sources
(``image_path`` as a mapping ``asset key -> {path, scale, offset, nodata}``), the item id its
``id`` (messages name the scene by it), its datetime the ``time`` column, and with ``group_by``
the group column a time-series catalogue groups by. Hrefs are kept as URLs: GDAL reads them
over its virtual file systems (``https://`` through ``/vsicurl/``, ``s3://`` through ``/vsis3/``)
with the retries crossgeo configures (`crossgeo.io.gdal_options`). Nothing is opened here: an
href that cannot be opened is a problem of its scene when the sampler is built.

pystac is optional (the ``stac`` extra) and imported only when items must be parsed; a
pystac-client search is accepted as it is (its ``item_collection()``), without importing it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from crossgeo.errors import ConfigError, MissingAssetError, OptionError

__all__ = ["stac_scenes"]


def _pystac() -> Any:
    try:
        import pystac
    except ImportError as error:  # pragma: no cover - the stac extra is installed in the test envs
        raise ImportError(
            "crossgeo.stac_scenes needs pystac to read STAC items; in a clone of crossgeo install it with: "
            "pip install '.[stac]' (the stac extra; or pip install pystac)"
        ) from error
    return pystac


def _items(items: Any) -> list[Any]:
    """pystac Items from an ItemCollection, a search, a list of items/dicts or a path/URL of item JSON."""
    pystac = _pystac()
    if hasattr(items, "item_collection") and callable(items.item_collection):  # a pystac-client ItemSearch
        items = items.item_collection()
    if isinstance(items, (str, os.PathLike)):
        href = os.fspath(items)
        try:
            data = pystac.StacIO.default().read_json(href)
        except Exception as error:
            raise ConfigError(
                f"STAC items {href!r} could not be read ({error}). Give the path or URL of an item collection "
                "(a GeoJSON FeatureCollection of STAC items) or of one item."
            ) from error
        if data.get("type") == "Feature":
            return [pystac.Item.from_dict(data, href=href)]
        if data.get("type") != "FeatureCollection":
            raise ConfigError(
                f"STAC items {href!r} is a {data.get('type')!r} document, not an item collection "
                "(type FeatureCollection) or an item (type Feature). For a catalogue or collection, list its "
                "items first (pystac: list(catalog.get_items(recursive=True)))."
            )
        return [_with_href(pystac, feature, href) for feature in data.get("features", [])]
    if isinstance(items, pystac.ItemCollection):
        return list(items.items)
    if isinstance(items, (Mapping, pystac.Item)):
        items = [items]
    if isinstance(items, bytes) or not hasattr(items, "__iter__"):  # lists, tuples, generators (search.items())
        raise OptionError(
            "items must be a pystac ItemCollection, a list of pystac Items or item dicts, a path/URL of an "
            f"item collection JSON, or a pystac-client search; got {type(items).__name__}."
        )
    out = []
    for k, item in enumerate(items):
        if isinstance(item, pystac.Item):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(pystac.Item.from_dict(dict(item)))
        else:
            raise OptionError(f"items[{k}] is a {type(item).__name__}, not a pystac Item or an item dict.")
    return out


def _with_href(pystac: Any, feature: Mapping[str, Any], href: str) -> Any:
    """An item of a collection file: relative asset hrefs start at the file's folder."""
    item = pystac.Item.from_dict(dict(feature))
    if not any(link.get("rel") == "self" for link in feature.get("links", [])):
        item.set_self_href(_join(href, f"{item.id}.json"))
    return item


def _join(href: str, name: str) -> str:
    if "://" in href:
        return href.rsplit("/", 1)[0] + "/" + name
    return os.path.join(os.path.dirname(os.path.abspath(href)), name)


def _number(value: Any) -> float | None:
    """A raster-extension number (``"nan"``, ``"inf"`` and ``"-inf"`` are how STAC writes those)."""
    if value is None:
        return None
    return float(value)


def _band_values(asset: Any) -> list[dict[str, Any]]:
    """scale/offset/nodata per band of an asset: ``raster:bands`` (raster extension 1.x) or ``bands`` (STAC 1.1)."""
    fields = asset.extra_fields
    common = {
        "scale": fields.get("raster:scale"),
        "offset": fields.get("raster:offset"),
        "nodata": fields.get("nodata"),
    }
    bands = fields.get("raster:bands")
    if isinstance(bands, list):
        return [{key: b.get(key, common[key]) for key in common} for b in bands if isinstance(b, Mapping)]
    bands = fields.get("bands")
    if isinstance(bands, list):
        return [
            {
                "scale": b.get("raster:scale", common["scale"]),
                "offset": b.get("raster:offset", common["offset"]),
                "nodata": b.get("nodata", common["nodata"]),
            }
            for b in bands
            if isinstance(b, Mapping)
        ]
    return [common]


def _same(values: Sequence[Any]) -> bool:
    first = values[0]
    return all(
        v == first or (isinstance(v, float) and isinstance(first, float) and math.isnan(v) and math.isnan(first))
        for v in values
    )


def _sources(item: Any, key: str) -> dict[str, dict[str, Any]]:
    """The image sources of one asset: one source, or one per band when its bands disagree on scale/offset/nodata."""
    asset = item.assets[key]
    href = asset.get_absolute_href() or asset.href
    bands = _band_values(asset)
    keys = ("scale", "offset", "nodata")
    if len(bands) <= 1 or all(_same([b[k] for b in bands]) for k in keys):
        spec: dict[str, Any] = {"path": href}
        spec.update({k: _number(bands[0][k]) for k in keys if bands and bands[0][k] is not None})
        return {key: spec}
    return {
        f"{key}_{b}": {"path": href, "bands": [b], **{k: _number(v[k]) for k in keys if v[k] is not None}}
        for b, v in enumerate(bands, 1)
    }


def _time(item: Any) -> str | None:
    moment = item.datetime or item.common_metadata.start_datetime
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _per_item(value: Any, item: Any, option: str) -> str | None:
    """``mask_path``/``crops_path`` of one item: an asset key of it, a path for all, a mapping by id or a callable."""
    if value is None:
        return None
    if callable(value):
        value = value(item)
    elif isinstance(value, Mapping):
        value = value.get(item.id)
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise OptionError(
            f"{option} of item {item.id!r} must be an asset key, a path or URL, got {type(value).__name__}."
        )
    text = os.fspath(value)
    if text in item.assets:
        asset = item.assets[text]
        return str(asset.get_absolute_href() or asset.href)
    # Made absolute: the rows may be written to a table elsewhere, whose folder relative paths would start at.
    return text if "://" in text or text.startswith("/vsi") else os.path.abspath(text)


def stac_scenes(
    items: Any,
    assets: Sequence[str],
    *,
    mask_path: Any = None,
    crops_path: Any = None,
    group_by: str | Callable[[Any], Any] | None = None,
) -> list[dict[str, Any]]:
    """A catalogue of scenes (one mapping per STAC item) for `crossgeo.SceneSampler`.

    Args:
        items: A pystac ``ItemCollection``, a list of pystac Items or item dicts, the path or
            URL of an item collection JSON (or of one item), or a pystac-client search.
        assets: The asset keys stacked as the image's sources, in channel order (the first is
            the reference grid). Every item must have them.
        mask_path: Each scene's mask: an asset key of the items (e.g. a label asset), a path
            or URL for every scene, a mapping item id -> path, or a callable item -> path.
            None leaves the column empty (give `SceneSampler` a shared ``mask_path``).
        crops_path: Each scene's windows, given as ``mask_path`` is.
        group_by: An item property (e.g. ``"s2:mgrs_tile"``) or a callable item -> value,
            written as a column (named after the property, or ``group``) for the time-series
            grouping of `SceneSampler` (that grouping is its feature; this only writes the column).

    Returns:
        One dict per item: ``id``, ``image_path`` (mapping asset key -> ``{path, scale, offset,
        nodata}``, the last three from the raster extension where present; an asset whose bands
        disagree on them becomes one source per band, ``KEY_1``, ``KEY_2``, ...), ``time`` (ISO
        8601 from the item's datetime or start_datetime), ``mask_path``, ``crops_path`` and
        the group column. `crossgeo.catalogue.write_catalogue` writes it as a CSV/Parquet table.

    Raises:
        MissingAssetError: items lack a listed asset (every such item and its assets are named).
        ConfigError: the items cannot be read, or ``group_by`` names a property an item lacks.
    """
    if isinstance(assets, str) or not isinstance(assets, Sequence) or not assets:
        raise OptionError(f"assets must be a non-empty list of asset keys, e.g. ['B04', 'B08']; got {assets!r}.")
    if not all(isinstance(a, str) and a for a in assets):
        raise OptionError(f"assets must be asset keys (non-empty strings), got {list(assets)!r}.")
    parsed = _items(items)
    if not parsed:
        raise ConfigError("The STAC items are empty: give at least one item (check the search's filters).")
    missing = [(item, [a for a in assets if a not in item.assets]) for item in parsed]
    missing = [(item, keys) for item, keys in missing if keys]
    if missing:
        lines = [f"item {item.id!r} lacks asset(s) {keys} (it has {sorted(item.assets)})" for item, keys in missing]
        shown = "; ".join(lines[:10]) + (f"; ... and {len(lines) - 10} more" if len(lines) > 10 else "")
        raise MissingAssetError(
            f"{len(missing)} of {len(parsed)} STAC item(s) lack a listed asset: {shown}. List only asset keys every "
            "item has (assets=...), or leave those items out of the search/collection."
        )
    column = None if group_by is None else group_by if isinstance(group_by, str) else "group"
    rows = []
    for item in parsed:
        image: dict[str, Any] = {}
        for key in assets:
            image.update(_sources(item, key))
        row: dict[str, Any] = {
            "id": item.id,
            "image_path": image,
            "time": _time(item),
            "mask_path": _per_item(mask_path, item, "mask_path"),
            "crops_path": _per_item(crops_path, item, "crops_path"),
        }
        if column is not None:
            if callable(group_by):
                value = group_by(item)
            elif group_by in item.properties:
                value = item.properties[group_by]
            else:
                raise ConfigError(
                    f"group_by {group_by!r}: item {item.id!r} has no such property (it has "
                    f"{sorted(item.properties)}). Name a property every item has, or pass a callable item -> group."
                )
            row[column] = value
        rows.append(row)
    return rows
