"""``userlibri corpora``."""

from __future__ import annotations

import click


@click.command("corpora")
def command() -> None:
    """Not yet written."""
    raise click.ClickException("userlibri corpora is being written")
