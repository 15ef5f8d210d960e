"""The ``userlibri`` command: a click group that sets logging and the seed, then one module per
command group. Each command calls exactly one library function."""

from __future__ import annotations

import logging
import random
import sys

import click

from userlibri import __version__
from userlibri.constants import DEFAULT_SEED
from userlibri.errors import UserLibriError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="userlibri")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    help="Logging verbosity.",
)
@click.option("--seed", type=int, default=DEFAULT_SEED, help="Global random seed.")
@click.pass_context
def cli(ctx: click.Context, log_level: str, seed: int) -> None:
    """userlibri: speech personalization from text alone."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is a core dependency
        pass
    ctx.ensure_object(dict)
    ctx.obj["seed"] = seed


def _register() -> None:
    # One module per command group; each defines ``command`` (a click command or group).
    from userlibri.cli import (
        asr,
        asr_export,
        asr_inspect,
        asr_ship,
        bench,
        bench_perf,
        bench_wer,
        build,
        corpora,
        decode,
        lm,
        synth,
    )

    asr.command.add_command(asr_export.command)
    asr.command.add_command(asr_ship.command)
    asr.command.add_command(asr_inspect.command)
    for extra in bench_wer.COMMANDS + bench_perf.COMMANDS:
        bench.command.add_command(extra)
    for module in (corpora, synth, build, lm, asr, decode, bench):
        cli.add_command(module.command)


_register()


def main() -> None:
    """Entry point: bad input becomes a one-line error and exit status 2, not a traceback."""
    try:
        cli.main(standalone_mode=False, prog_name="userlibri")
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except UserLibriError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
