import os
from pathlib import Path

import pytest

from userlibri.fsio import atomic_path, write_json_atomic, write_text_atomic


def test_write_text_atomic_replaces(tmp_path: Path) -> None:
    p = tmp_path / "a" / "f.txt"
    write_text_atomic(p, "one")
    write_text_atomic(p, "two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.txt"]


def test_atomic_file_left_untouched_on_error(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_directory_replace_and_rollback(tmp_path: Path) -> None:
    d = tmp_path / "out"
    with atomic_path(d) as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("1")
    assert (d / "x").read_text() == "1"
    with atomic_path(d) as tmp:
        tmp.mkdir()
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in d.iterdir()) == ["y"]
    with pytest.raises(KeyError), atomic_path(d) as tmp:
        tmp.mkdir()
        (tmp / "z").write_text("3")
        raise KeyError("fail")
    assert sorted(p.name for p in d.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_json_atomic_sorted(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    write_json_atomic(p, {"b": 1, "a": [1, 2]})
    assert p.read_text().index('"a"') < p.read_text().index('"b"')


def test_exclusive_dir_blocks_a_second_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    from userlibri.fsio import LOCK_FILE, exclusive_dir

    probe = (
        "import sys; from userlibri.fsio import exclusive_dir\n"
        "try:\n    with exclusive_dir(sys.argv[1], 'job'): pass\n"
        "except Exception as e:\n    print(e); sys.exit(3)\n"
    )
    with exclusive_dir(tmp_path / "run", "job") as d:
        assert (d / LOCK_FILE).read_text().strip() == str(os.getpid())
        other = subprocess.run([sys.executable, "-c", probe, str(d)], capture_output=True, text=True)
        assert other.returncode == 3 and f"pid {os.getpid()}" in other.stdout and "run" in other.stdout
    # Released at the end of the block (and by the kernel if the holder dies).
    assert subprocess.run([sys.executable, "-c", probe, str(tmp_path / "run")]).returncode == 0
