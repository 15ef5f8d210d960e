"""``userlibri build``."""

from __future__ import annotations

import click


@click.command("build")
def command() -> None:
    """Not yet written."""
    raise click.ClickException("userlibri build is being written")
