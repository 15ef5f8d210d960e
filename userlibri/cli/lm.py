"""``userlibri lm ...``: tokenizer, n-gram and neural LMs, privacy, audits."""

from __future__ import annotations

import click


@click.group("lm")
def command() -> None:
    """Language models: tokenizer, n-gram, neural, privacy, audit, eval."""
