"""The shell recipes' argument handling (their stages run in the end-to-end test and in make demo)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*/*.sh"))


def _run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize("script", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_help_prints_the_whole_header_and_nothing_else(script: Path) -> None:
    out = _run(script, "--help")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    header = []
    for line in script.read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        header.append(line)
    assert lines == header


@pytest.mark.parametrize("script", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_unknown_arguments_are_refused(script: Path) -> None:
    out = _run(script, "--no-such-option")
    assert out.returncode == 2 and "unknown argument: --no-such-option" in out.stderr


def test_userlibri_recipe_names_missing_and_bad_paths(tmp_path: Path) -> None:
    script = ROOT / "recipes" / "userlibri" / "run.sh"
    out = _run(script)
    assert out.returncode == 2 and "missing --librispeech" in out.stderr
    out = _run(
        script, "--librispeech", str(tmp_path / "nope"), "--books", str(tmp_path), "--model", str(tmp_path)
    )
    assert out.returncode == 2 and f"not a directory: {tmp_path / 'nope'}" in out.stderr
