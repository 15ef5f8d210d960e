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


def _parse(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """recipes/lib.sh's parse_flags in a throwaway script: prints the variables it may set."""
    script = tmp_path / "recipe.sh"
    script.write_text(
        "#!/usr/bin/env bash\n# A test recipe.\n#   recipe.sh [--work DIR]\nset -euo pipefail\n"
        f'. "{ROOT / "recipes" / "lib.sh"}"\n'
        "work=w\nstop_stage=100\nneural=0\nonly_books=\n"
        'parse_flags work stop_stage neural? books=only_books -- "$@"\n'
        'echo "work=$work stop_stage=$stop_stage neural=$neural only_books=$only_books"\n'
    )
    return _run(script, *args)


def test_parse_flags_sets_values_switches_and_renamed_flags(tmp_path: Path) -> None:
    out = _parse(tmp_path)
    assert out.returncode == 0 and out.stdout == "work=w stop_stage=100 neural=0 only_books=\n"
    out = _parse(tmp_path, "--stop-stage", "3", "--neural", "--books", "161 2701", "--work", "a b")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "work=a b stop_stage=3 neural=1 only_books=161 2701\n"


def test_parse_flags_refuses_missing_values_and_unlisted_flags(tmp_path: Path) -> None:
    out = _parse(tmp_path, "--work")
    assert out.returncode == 2 and "--work: expected a value, found none" in out.stderr
    for bad in ("--only-books", "--stop_stage", "stray", "--neural=1"):
        out = _parse(tmp_path, bad, "x")
        assert out.returncode == 2 and f"unknown argument: {bad}" in out.stderr, bad
    out = _parse(tmp_path, "-h")
    assert out.returncode == 0 and out.stdout == "# A test recipe.\n#   recipe.sh [--work DIR]\n"


def test_parse_flags_sets_variables_whatever_their_names(tmp_path: Path) -> None:
    # continue_am.sh has a --name flag: a local of parse_flags with the same name once took the value.
    script = tmp_path / "recipe.sh"
    names = ("name", "flag", "spec", "values", "switches")
    script.write_text(
        "#!/usr/bin/env bash\n# A test recipe.\nset -euo pipefail\n"
        f'. "{ROOT / "recipes" / "lib.sh"}"\n'
        + "".join(f"{n}=default\n" for n in names)
        + f'parse_flags {" ".join(names)} -- "$@"\n'
        + "echo "
        + " ".join(f"{n}=${n}" for n in names)
        + "\n"
    )
    args = [a for n in names for a in (f"--{n}", f"new-{n}")]
    out = _run(script, *args)
    assert out.returncode == 0, out.stderr
    assert out.stdout == " ".join(f"{n}=new-{n}" for n in names) + "\n"
