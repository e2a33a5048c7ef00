"""Draw the two pictures of the getting-started page by running the page itself.

    python docs/scripts/getting_started_figures.py   # needs torch and the cli extra

Runs ``docs/getting-started.md`` the way the documentation tests do (in the core env's
way, then the torch env's) and copies what its commands drew - the windows map of
``crossgeo windows --map`` and the image / reference / prediction sheet of
``crossgeo preview --prediction`` - to ``docs/images/getting-started-*.png``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "images"


def main() -> int:
    sys.path.insert(0, str(HERE))
    import run_examples as examples

    blocks = examples.all_blocks()["docs/getting-started.md"]
    with tempfile.TemporaryDirectory() as tmp:
        scene = examples.write_scene(Path(tmp) / "scene")
        drawn = {"core": ("windows", "windows-split.png"), "torch": ("prediction", "compare.png")}
        for framework, (name, picture) in drawn.items():
            work = Path(tmp) / framework
            examples.run_page(blocks, framework, scene, work)
            target = IMAGES / f"getting-started-{name}.png"
            shutil.copyfile(work / "crossgeo-demo" / picture, target)
            print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
