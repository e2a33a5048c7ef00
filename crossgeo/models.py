"""Model files: which framework can load one, decided from the file's content without loading it.

`model_file_framework` is what ``crossgeo predict`` and the torch and Keras adapters' file
loaders call before any framework code runs: model files are code, and crossgeo loads them
only through ``torch.jit.load`` and Keras' ``safe_mode=True``, never by unpickling.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from crossgeo.errors import ConfigError

__all__ = ["model_file_framework"]

_FIXES = {
    "torch": "Export it as TorchScript: torch.jit.script(model).save('model.pt') (or torch.jit.trace)",
    "keras": "Save it in the Keras format: model.save('model.keras')",
}


def model_file_framework(path: str | os.PathLike[str], *, option: str = "model_path") -> str:
    """``"torch"`` for a TorchScript file, ``"keras"`` for a Keras ``.keras`` file; anything else is an error.

    Decided from the file's content without loading it: both are zip files; a Keras file
    holds ``config.json`` (and ``metadata.json``) at its root, a TorchScript file a folder
    holding ``code/`` and ``constants.pkl``. A ``torch.save`` file (a pickled module or
    state dict: zip without ``code/``, or the legacy pickle), a legacy Keras HDF5 file and
    other formats are refused with the way to export a loadable file: model files are
    code, and crossgeo loads them only through ``torch.jit.load`` and Keras'
    ``safe_mode=True``, never by unpickling arbitrary objects.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"{option} {str(file)!r} does not exist (or is not a file); give a TorchScript or a .keras file."
        )
    with file.open("rb") as handle:
        head = handle.read(8)
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
        if "config.json" in names:
            if file.suffix != ".keras":
                raise ConfigError(
                    f"{option} {str(file)!r} is a Keras model file without the .keras suffix Keras requires; "
                    "rename it to end in .keras."
                )
            return "keras"
        parts = [name.split("/") for name in names]
        if any(len(p) > 2 and p[1] == "code" for p in parts) or any(p[1:] == ["constants.pkl"] for p in parts):
            return "torch"
        if any(p[1:] == ["data.pkl"] for p in parts):
            raise ConfigError(
                f"{option} {str(file)!r} is a torch.save file (a pickled module or state dict), not TorchScript; "
                f"crossgeo does not unpickle model files. {_FIXES['torch']}."
            )
    elif head == b"\x89HDF\r\n\x1a\n":
        raise ConfigError(
            f"{option} {str(file)!r} is a legacy Keras HDF5 file, which Keras cannot load safely. {_FIXES['keras']}."
        )
    elif head[:1] == b"\x80":
        raise ConfigError(
            f"{option} {str(file)!r} is a pickle (e.g. a legacy torch.save file); crossgeo does not unpickle model "
            f"files. {_FIXES['torch']}."
        )
    raise ConfigError(
        f"{option} {str(file)!r} is neither a TorchScript file nor a Keras .keras file. torch: "
        f"{_FIXES['torch']}; Keras: {_FIXES['keras']}."
    )
