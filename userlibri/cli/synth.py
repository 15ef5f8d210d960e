"""``userlibri synth``."""

from __future__ import annotations

import click


@click.command("synth")
def command() -> None:
    """Not yet written."""
    raise click.ClickException("userlibri synth is being written")
