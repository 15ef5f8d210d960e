"""Fetch packages from the Debian and npm registries without root: ``apt-get download`` +
``dpkg-deb -x``, ``npm pack`` + a safe tar extraction. Every failure is an ``ExternalToolError``
that names the command and quotes its stderr."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

from userlibri.errors import DataFormatError, ExternalToolError

log = logging.getLogger(__name__)

_STDERR_TAIL = 2000
_NO_LISTS_HINTS = ("unable to locate package", "has no installation candidate", "no packages found")


def require_tool(name: str, hint: str) -> str:
    """The path of program ``name`` or an ``ExternalToolError`` with an install hint."""
    path = shutil.which(name)
    if path is None:
        raise ExternalToolError(f"'{name}' was not found on PATH; {hint}")
    return path


def run_tool(cmd: Sequence[str], cwd: str | Path | None = None, timeout: float = 600) -> str:
    """Run ``cmd`` and return its stdout; a missing program or a non-zero exit is an error."""
    log.debug("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(
            list(cmd),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise ExternalToolError(f"'{cmd[0]}' could not be run: {e}") from e
    except subprocess.TimeoutExpired as e:
        raise ExternalToolError(f"'{' '.join(cmd)}' did not finish within {timeout:.0f} s") from e
    if proc.returncode != 0:
        raise ExternalToolError(
            f"'{' '.join(cmd)}' failed with exit status {proc.returncode}: "
            f"{proc.stderr.strip()[-_STDERR_TAIL:] or proc.stdout.strip()[-_STDERR_TAIL:] or '(no output)'}"
        )
    return proc.stdout


def apt_download(package: str, dest: Path) -> Path:
    """Download ``package``'s .deb into ``dest`` with ``apt-get download`` (no root needed).

    When apt has no package lists yet, run ``apt-get update`` first if we are root, otherwise
    explain what to do.
    """
    apt = require_tool("apt-get", "install apt (Debian/Ubuntu) to fetch this corpus")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        run_tool([apt, "download", package], cwd=dest)
    except ExternalToolError as e:
        if not any(h in str(e).lower() for h in _NO_LISTS_HINTS):
            raise
        if os.geteuid() != 0:
            raise ExternalToolError(
                f"'apt-get download {package}' found no such package; the apt package lists are "
                "probably empty or stale. Run 'sudo apt-get update' (needs root once) and retry."
            ) from e
        log.info("apt package lists lack %s; running 'apt-get update'", package)
        run_tool([apt, "update"])
        run_tool([apt, "download", package], cwd=dest)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if len(debs) != 1:
        raise ExternalToolError(
            f"'apt-get download {package}' in {dest}: expected one {package}_*.deb, found {len(debs)}"
        )
    return debs[0]


def deb_version(deb: Path) -> str:
    """The ``Version`` field of a .deb."""
    dpkg = require_tool("dpkg-deb", "install dpkg (Debian/Ubuntu) to unpack .deb packages")
    return run_tool([dpkg, "-f", str(deb), "Version"]).strip()


def dpkg_extract(deb: Path, dest: Path) -> Path:
    """Unpack the files of ``deb`` under ``dest`` (``dpkg-deb -x``, no root needed)."""
    dpkg = require_tool("dpkg-deb", "install dpkg (Debian/Ubuntu) to unpack .deb packages")
    dest.mkdir(parents=True, exist_ok=True)
    run_tool([dpkg, "-x", str(deb), str(dest)])
    return dest


def npm_pack(spec: str, dest: Path) -> Path:
    """Download the tarball of npm package ``spec`` (``name@version``) into ``dest``."""
    npm = require_tool("npm", "install Node.js and npm to fetch this corpus (e.g. apt-get install npm)")
    dest.mkdir(parents=True, exist_ok=True)
    out = run_tool([npm, "pack", spec, "--silent"], cwd=dest).strip().splitlines()
    name = out[-1].strip() if out else ""
    tgz = dest / name
    if not name or not tgz.is_file():
        found = sorted(p.name for p in dest.glob("*.tgz"))
        raise ExternalToolError(f"'npm pack {spec}': expected a .tgz in {dest}, found {found or 'none'}")
    return tgz


def extract_tarball(tgz: Path, dest: Path) -> Path:
    """Safely extract a (gzipped) tarball under ``dest`` (no links, no paths outside ``dest``)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tgz) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise DataFormatError(tgz, "a readable .tgz archive", repr(e)) from e
    return dest
