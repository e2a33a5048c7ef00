"""Configurations as an attack or accident surface (issue #21.6, #21.8, #21.9).

A configuration file may come from someone else. These tests run the ``crossgeo`` commands
on the demo scene (real rasters written by ``crossgeo demo``) with YAML files that read the
environment (``${oc.env:...}``), explode when expanded (YAML aliases, ``${key}``
references), repeat a key, or ask for a patch no memory can hold.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("yaml")
pytest.importorskip("omegaconf")
pytest.importorskip("PIL")
pytest.importorskip("tqdm")

import yaml

from crossgeo import ConfigError, PatchSampler
from crossgeo import testing as T
from crossgeo.cli import common, main

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hunter2-do-not-print"


def run(*argv: Any) -> tuple[int, str, str]:
    """``crossgeo ARGV`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo scene's dataset options (absolute paths)."""
    folder = tmp_path_factory.mktemp("demo")
    code, _, err = run("demo", "--framework", "none", "--out", folder)
    assert code == 0, err
    return common.load_config(folder / "config.yaml")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- ${oc.env:...} and --allow-env


def env_config(tmp_path: Path, demo: dict[str, Any]) -> Path:
    """The demo config whose image path comes from the environment variable CROSSGEO_TEST_IMAGE."""
    options = {k: v for k, v in demo.items() if k != "class_names"}
    options["image_mbtiles_path"] = "${oc.env:CROSSGEO_TEST_IMAGE}"
    return write(tmp_path / "env.yaml", yaml.safe_dump({"train_dataset": options}))


COMMANDS = {
    "validate": [],
    "preview": ["--out", "{tmp}/p.png"],
    "stats": [],
    "index": [],
    "windows": ["--grid", "64", "--out", "{tmp}/w.csv"],
    "predict": ["--model", "{tmp}/model.pt", "--out", "{tmp}/pred.tif"],
    "evaluate": [],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_config_command_refuses_oc_env_without_allow_env(
    tmp_path: Path, demo: dict[str, Any], command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROSSGEO_TEST_IMAGE", SECRET)
    config = env_config(tmp_path, demo)
    extra = [a.format(tmp=tmp_path) for a in COMMANDS[command]]
    argv = [command, f"{tmp_path}/pred.tif", config] if command == "evaluate" else [command, config]
    code, out, err = run(*argv, *extra)
    assert code == 1
    assert "image_mbtiles_path" in err and "${oc.env:CROSSGEO_TEST_IMAGE}" in err and "--allow-env" in err
    assert SECRET not in out + err  # the value was never read, let alone printed
    with contextlib.redirect_stdout(io.StringIO()) as help_text, pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--allow-env" in help_text.getvalue()


def test_allow_env_resolves_oc_env(tmp_path: Path, demo: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSGEO_TEST_IMAGE", demo["image_mbtiles_path"])
    config = env_config(tmp_path, demo)
    code, out, _ = run("validate", config, "--allow-env")
    assert code == 0, out
    assert common.load_config(config, allow_env=True)["image_mbtiles_path"] == demo["image_mbtiles_path"]


@pytest.mark.parametrize(
    "value",
    ["${oc.decode:'[1, 2]'}", "${oc.env:HOME,x}", "${ oc.env : HOME }", "${${resolver}:HOME}", "x-${oc.env:HOME}-y"],
)
def test_any_resolver_is_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    config = write(tmp_path / "r.yaml", yaml.safe_dump({"resolver": "oc.env", "train_dataset": {"mask_path": value}}))
    with pytest.raises(ConfigError, match=r"train_dataset\.mask_path is .*--allow-env"):
        common.load_config(config)


def test_only_what_the_chosen_block_uses_is_checked(tmp_path: Path, demo: dict[str, Any]) -> None:
    """A resolver elsewhere in the file (a Hydra ``${now:...}``) does not matter; one reached by a reference does."""
    options = {k: v for k, v in demo.items() if k != "class_names"}
    text = {"hydra": {"run": {"dir": "${now:%Y-%m-%d}"}}, "secrets": {"token": "${oc.env:HOME}"}}
    config = write(tmp_path / "full.yaml", yaml.safe_dump({**text, "train_dataset": options}))
    assert common.load_config(config)["patch_size"] == demo["patch_size"]
    options["crops_path"] = "${secrets.token}"
    config = write(tmp_path / "via.yaml", yaml.safe_dump({**text, "train_dataset": options}))
    with pytest.raises(ConfigError, match=r"secrets\.token is '\$\{oc.env:HOME\}', a resolver interpolation"):
        common.load_config(config)


def test_plain_references_to_other_keys_are_resolved(tmp_path: Path, demo: dict[str, Any]) -> None:
    """Plain ``${key}`` references (absolute, relative, list items) need no flag: they read only the file."""
    options = {k: v for k, v in demo.items() if k != "class_names"}
    options.update(patch_size="${hyperparameters.size}", mask_path="${paths.masks[1]}", crops_path="${..crops}")
    top = {"hyperparameters": {"size": 64}, "paths": {"masks": ["x", demo["mask_path"]]}, "crops": demo["crops_path"]}
    loaded = common.load_config(write(tmp_path / "refs.yaml", yaml.safe_dump({**top, "train_dataset": options})))
    assert loaded["patch_size"] == 64 and loaded["mask_path"] == demo["mask_path"]
    assert loaded["crops_path"] == demo["crops_path"]
    sampler = PatchSampler(**common.split_options(loaded, "refs.yaml").sampler)
    assert sampler.patch_size == 64


# --------------------------------------------------------------------------- expansion bombs


def alias_bomb() -> str:
    """A 'billion laughs' YAML file: 10 levels of 10 aliases each (10**9 strings once expanded), under 1 KB."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "\n".join([*lines, "image_mbtiles_path: image.tif", "patch_size: *a9", ""])


def reference_bomb() -> str:
    """The same with ``${key}`` references, which OmegaConf would resolve into 10**9 strings."""
    refs = ["'${l" + str(i) + "}'" for i in range(9)]
    lines = ["l0: lol"] + [f"l{i}: [{', '.join([refs[i - 1]] * 10)}]" for i in range(1, 10)]
    return "\n".join([*lines, "image_mbtiles_path: image.tif", "patch_size: ${l9}", ""])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (alias_bomb(), r"YAML aliases \(\*name\) expand this configuration to more than 100,000 extra values"),
        (reference_bomb(), r"resolving the \$\{\.\.\.\} references of l\d+ would produce more than 100,000 values"),
    ],
    ids=["yaml-aliases", "references"],
)
def test_an_expansion_bomb_fails_in_under_a_second(tmp_path: Path, text: str, message: str) -> None:
    bomb = write(tmp_path / "bomb.yaml", text)
    assert bomb.stat().st_size < 1024
    # In a child first, with a timeout: an unbounded loader would expand for minutes (or until memory runs out).
    child = subprocess.run(
        [sys.executable, "-m", "crossgeo", "validate", str(bomb)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 1 and "crossgeo validate: error:" in child.stderr and "Traceback" not in child.stderr
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        common.load_config(bomb)
    assert time.perf_counter() - start < 1.0


def test_aliases_and_merge_keys_within_bounds_still_work(tmp_path: Path, demo: dict[str, Any]) -> None:
    options = {k: v for k, v in demo.items() if k not in ("class_names", "patch_size")}
    text = "base: &base\n  patch_size: 64\n  selected_bands: &bands [1, 2, 3]\n" + yaml.safe_dump(
        {"train_dataset": options}
    ).replace("train_dataset:\n", "train_dataset:\n  <<: *base\n  n_classes: 4\n")
    loaded = common.load_config(write(tmp_path / "merge.yaml", text))
    assert loaded["patch_size"] == 64 and loaded["selected_bands"] == [1, 2, 3] and loaded["n_classes"] == 4


def test_a_recursive_alias_and_a_reference_loop_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 1: a YAML alias refers to a block that contains it"):
        common.load_config(write(tmp_path / "rec.yaml", "a: &x [1, *x]\nimage_path: x\n"))
    with pytest.raises(ConfigError, match=r"the reference chain through (a|b) refers to itself"):
        common.load_config(write(tmp_path / "loop.yaml", "a: ${b}\nb: ${a}\nimage_path: x\n"))


# --------------------------------------------------------------------------- duplicate keys


def test_a_duplicate_key_is_an_error_naming_the_key_and_lines(tmp_path: Path, demo: dict[str, Any]) -> None:
    options = {k: v for k, v in demo.items() if k != "class_names"}
    text = yaml.safe_dump({"train_dataset": options}, sort_keys=False) + "  patch_size: 4096\n"
    config = write(tmp_path / "dup.yaml", text)
    first = next(n for n, line in enumerate(text.splitlines(), 1) if line.strip().startswith("patch_size:"))
    last = len(text.splitlines())
    code, out, err = run("validate", config)
    assert code == 1, out
    assert f"line {last}: the key 'patch_size' is given twice (first on line {first})" in err
    with pytest.raises(ConfigError, match="given twice"):
        common.load_config(config)


# --------------------------------------------------------------------------- patch_size and memory


def test_validate_refuses_a_huge_patch_without_allocating_it(tmp_path: Path, demo: dict[str, Any]) -> None:
    """patch_size 100000 on the 1024 x 1024 demo image: refused in a child whose address space is capped (2 GiB)."""
    options = {k: v for k, v in demo.items() if k != "class_names"}
    options["patch_size"] = 100_000
    options["crops_path"] = str(T.write_windows_table(tmp_path / "w.csv", [0], [0]))
    config = write(tmp_path / "huge.yaml", yaml.safe_dump({"train_dataset": options}))
    script = (
        "import resource, sys, time\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))\n"
        "from crossgeo.cli import main\n"
        "start = time.perf_counter()\n"
        "code = main(['validate', sys.argv[1]])\n"
        "seconds = time.perf_counter() - start\n"
        "peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
        "print('peak', peak, 'seconds', seconds)\n"
        "sys.exit(code)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(config)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 1, child.stdout + child.stderr
    assert "MemoryError" not in child.stdout + child.stderr
    problem = next(line for line in child.stdout.splitlines() if "patch_size 100000" in line)
    assert "larger than the image" in problem and "(1024 x 1024 pixels)" in problem
    assert "one patch would take 111.8 GiB (100000 x 100000 pixels x 12 bytes" in problem
    assert "Use a smaller patch_size (at most the image's 1024 pixels)" in problem
    peak_kib, seconds = (float(v) for v in child.stdout.split("peak ")[1].split(" seconds "))
    assert peak_kib < 1024**2 and seconds < 30  # well under 1 GiB of RSS (VmHWM: ru_maxrss survives exec)


def test_a_patch_larger_than_the_image_but_small_is_still_a_warning(tmp_path: Path, demo: dict[str, Any]) -> None:
    options = {k: v for k, v in demo.items() if k != "class_names"}
    options["patch_size"] = 2048
    options["crops_path"] = str(T.write_windows_table(tmp_path / "w.csv", [0], [0]))
    code, out, _ = run("validate", write(tmp_path / "big.yaml", yaml.safe_dump({"train_dataset": options})))
    assert code == 0, out
    assert "patch_size 2048 is larger than the image" in out


def test_a_catalogue_refuses_a_huge_patch_per_scene(demo: dict[str, Any]) -> None:
    from crossgeo import SceneSampler

    scene = {"image_path": demo["image_mbtiles_path"], "mask_path": demo["mask_path"], "crops_path": demo["crops_path"]}
    with pytest.raises(ConfigError, match=r"scene 0, .*patch_size 100000 is larger than the image .*111.8 GiB"):
        SceneSampler(scenes=[scene], patch_size=100_000, color_map=demo["color_map"], selected_bands=[1, 2, 3])
