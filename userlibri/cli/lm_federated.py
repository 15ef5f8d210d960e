"""``userlibri lm federated | federated-clients``: DP-FedAvg training of the background LSTM LM
on Flower, and pseudo-user clients cut from the book cache.

The commands are collected in ``COMMANDS``, to be attached to the ``lm`` group by ``cli/lm.py``.
"""

from __future__ import annotations

from pathlib import Path

import click

from userlibri.lm.federated_config import (
    CLIP_MODES,
    DEFAULT_CLIENTS_PER_ROUND,
    DEFAULT_CLIP_LR,
    DEFAULT_INITIAL_CLIP,
    DEFAULT_LOCAL_BATCH_SIZE,
    DEFAULT_LOCAL_EPOCHS,
    DEFAULT_LOCAL_LR,
    DEFAULT_NOISE_MULTIPLIER,
    DEFAULT_ROUND_TIMEOUT,
    DEFAULT_ROUNDS,
    DEFAULT_SERVER_LR,
    DEFAULT_SERVER_MOMENTUM,
    DEFAULT_TARGET_QUANTILE,
    LOCAL_OPTIMIZERS,
    RUN_MODES,
    SIMULATION_BACKENDS,
    FederatedConfig,
)
from userlibri.lm.federated_data import DEFAULT_SENTENCES_PER_CLIENT
from userlibri.lm.neural_config import (
    DEFAULT_EMBED_DIM,
    DEFAULT_HIDDEN_DIM,
    DEFAULT_MAX_TOKENS,
    DEFAULT_NUM_LAYERS,
    NeuralLMConfig,
)

_INPUT = click.Path(exists=True, dir_okay=False, path_type=Path)
_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_OUT = click.Path(file_okay=False, path_type=Path)


def _seed(ctx: click.Context) -> int:
    return int((ctx.obj or {}).get("seed", FederatedConfig.seed))


@click.command("federated")
@click.option(
    "--data", type=_DIR, required=True, help="Directory of client texts: each *.txt is one client (user)."
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Sentencepiece model (or its directory).",
)
@click.option("--out", type=_OUT, required=True, help="Output LM directory (same layout as neural-train's).")
@click.option(
    "--dev", type=_INPUT, multiple=True, help="Held-out sentences: server-side perplexity each round."
)
@click.option(
    "--rounds",
    type=int,
    default=DEFAULT_ROUNDS,
    show_default=True,
    help="Federated rounds (in all, when resuming).",
)
@click.option("--clients-per-round", type=int, default=DEFAULT_CLIENTS_PER_ROUND, show_default=True)
@click.option(
    "--local-epochs",
    type=float,
    default=DEFAULT_LOCAL_EPOCHS,
    show_default=True,
    help="Passes over a client's text per round.",
)
@click.option(
    "--local-lr", type=float, default=DEFAULT_LOCAL_LR, show_default=True, help="Client learning rate."
)
@click.option(
    "--local-optimizer",
    type=click.Choice(LOCAL_OPTIMIZERS),
    default="adam",
    show_default=True,
    help="Client optimizer (Adam with fresh state each round, or SGD as Andrew et al. 2021).",
)
@click.option("--local-batch-size", type=int, default=DEFAULT_LOCAL_BATCH_SIZE, show_default=True)
@click.option(
    "--server-lr",
    type=float,
    default=DEFAULT_SERVER_LR,
    show_default=True,
    help="Server learning rate on the noisy averaged update (1 with no momentum: plain FedAvg).",
)
@click.option(
    "--server-momentum",
    type=float,
    default=DEFAULT_SERVER_MOMENTUM,
    show_default=True,
    help="Server momentum (DP-FedAvgM; Andrew et al. 2021 use 0.9); post-processing, no privacy cost.",
)
@click.option(
    "--noise-multiplier",
    type=float,
    default=DEFAULT_NOISE_MULTIPLIER,
    show_default=True,
    help="z: noise std = z * clip / clients-per-round (0: no DP).",
)
@click.option(
    "--clip",
    "clip_mode",
    type=click.Choice(CLIP_MODES),
    default="adaptive",
    show_default=True,
    help="Server-side clipping of client updates.",
)
@click.option(
    "--initial-clip",
    type=float,
    default=DEFAULT_INITIAL_CLIP,
    show_default=True,
    help="The clip norm (fixed) or its start (adaptive).",
)
@click.option(
    "--target-quantile",
    type=float,
    default=DEFAULT_TARGET_QUANTILE,
    show_default=True,
    help="Adaptive: share of update norms meant to fall below the clip.",
)
@click.option(
    "--clip-lr",
    type=float,
    default=DEFAULT_CLIP_LR,
    show_default=True,
    help="Adaptive: geometric learning rate of the clip.",
)
@click.option(
    "--clipped-count-stddev",
    type=float,
    default=None,
    help="Adaptive: noise std on the clipped count [default: clients-per-round / 20].",
)
@click.option(
    "--delta",
    type=float,
    default=None,
    help="Delta of the user-level guarantee [default: power of 10 <= 1/(10 clients)].",
)
@click.option(
    "--init",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Start from this LM (directory or lm.pt, e.g. pre-trained on public text) [default: random].",
)
@click.option("--embed-dim", type=int, default=None, help=f"[default: {DEFAULT_EMBED_DIM}, or --init's]")
@click.option("--hidden-dim", type=int, default=None, help=f"[default: {DEFAULT_HIDDEN_DIM}, or --init's]")
@click.option("--layers", type=int, default=None, help=f"[default: {DEFAULT_NUM_LAYERS}, or --init's]")
@click.option("--dropout", type=float, default=None, help=f"[default: {NeuralLMConfig.dropout}, or --init's]")
@click.option(
    "--max-tokens",
    type=int,
    default=DEFAULT_MAX_TOKENS,
    show_default=True,
    help="Longer sentences are truncated.",
)
@click.option("--threads", type=int, default=1, show_default=True, help="Torch threads per client.")
@click.option(
    "--parallel", type=int, default=1, show_default=True, help="Clients trained at once (Ray backend)."
)
@click.option(
    "--eval-every", type=int, default=1, show_default=True, help="Rounds between held-out evaluations."
)
@click.option(
    "--round-timeout",
    type=float,
    default=DEFAULT_ROUND_TIMEOUT,
    show_default=True,
    help="Seconds to wait for a round's replies.",
)
@click.option(
    "--mode",
    type=click.Choice(RUN_MODES),
    default="simulation",
    show_default=True,
    help="Flower simulation engine, or SuperLink + SuperNodes over loopback.",
)
@click.option(
    "--backend",
    type=click.Choice(SIMULATION_BACKENDS),
    default="ray",
    show_default=True,
    help="Simulation backend (inprocess: no Ray, clients one at a time).",
)
@click.option(
    "--resume", is_flag=True, help="Continue from the checkpoint in the work directory (same configuration)."
)
@click.option("--work-dir", type=_OUT, default=None, help="Checkpoints, job and logs [default: <out>.fed].")
@click.option("--int8/--no-int8", default=True, show_default=True, help="Also write lm.int8.onnx.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.pass_context
def federated(
    ctx: click.Context,
    data: Path,
    tokenizer: Path,
    out: Path,
    dev: tuple[Path, ...],
    rounds: int,
    clients_per_round: int,
    local_epochs: float,
    local_lr: float,
    local_optimizer: str,
    local_batch_size: int,
    server_lr: float,
    server_momentum: float,
    noise_multiplier: float,
    clip_mode: str,
    initial_clip: float,
    target_quantile: float,
    clip_lr: float,
    clipped_count_stddev: float | None,
    delta: float | None,
    init: Path | None,
    embed_dim: int | None,
    hidden_dim: int | None,
    layers: int | None,
    dropout: float | None,
    max_tokens: int,
    threads: int,
    parallel: int,
    eval_every: int,
    round_timeout: float,
    mode: str,
    backend: str,
    resume: bool,
    work_dir: Path | None,
    int8: bool,
    progress: bool,
) -> None:
    """Train the background LSTM LM with DP-FedAvg on Flower (user-level DP; fixed or adaptive
    clipping); writes lm.pt, lm.onnx, lm.int8.onnx, privacy.json, train.json (with the rounds)."""
    from userlibri.lm.federated import train_federated

    config = FederatedConfig(
        rounds=rounds,
        clients_per_round=clients_per_round,
        local_epochs=local_epochs,
        local_batch_size=local_batch_size,
        local_lr=local_lr,
        local_optimizer=local_optimizer,  # type: ignore[arg-type]
        server_lr=server_lr,
        server_momentum=server_momentum,
        max_tokens=max_tokens,
        clip=clip_mode,  # type: ignore[arg-type]
        noise_multiplier=noise_multiplier,
        initial_clip=initial_clip,
        target_quantile=target_quantile,
        clip_lr=clip_lr,
        clipped_count_stddev=clipped_count_stddev,
        delta=delta,
        seed=_seed(ctx),
        threads=threads,
        parallel=parallel,
        eval_every=eval_every,
        round_timeout=round_timeout,
    )
    given = {"embed_dim": embed_dim, "hidden_dim": hidden_dim, "num_layers": layers, "dropout": dropout}
    overrides = {k: v for k, v in given.items() if v is not None}
    info = train_federated(
        data,
        tokenizer,
        out,
        config,
        overrides,
        dev=dev,
        mode=mode,
        backend=backend,
        resume=resume,
        work_dir=work_dir,
        int8=int8,
        progress=progress,
        init=init,
    )
    eps = (
        "no DP"
        if info["epsilon"] is None
        else f"user-level epsilon {info['epsilon']:.3g} at delta {info['delta']:g}"
    )
    ppl = f", dev perplexity {info['dev_perplexity']:.2f}" if "dev_perplexity" in info else ""
    failed = sum(len(h["failed"]) for h in info["history"])
    click.echo(
        f"{out}: {info['clients']} clients, {len(info['history'])} rounds, {failed} failed client updates, "
        f"final clip {info['final_clip']:.4g}, {eps}{ppl}"
    )


@click.command("federated-clients")
@click.option("--corpus", type=_DIR, default=None, help="Book cache [default: ~/.cache/userlibri/corpora].")
@click.option("--exclude", multiple=True, help="Book ids to leave out (the test users' books).")
@click.option(
    "--out",
    type=_OUT,
    required=True,
    help="Output directory (clients/, heldout.txt, all_train.txt, clients.json).",
)
@click.option(
    "--sentences-per-client",
    type=int,
    default=DEFAULT_SENTENCES_PER_CLIENT,
    show_default=True,
    help="About this many sentences per client (runs of whole chapters).",
)
@click.option(
    "--max-clients", type=int, default=None, help="Keep a seeded random subset of this many training clients."
)
@click.option(
    "--heldout-clients", type=int, default=0, show_default=True, help="Clients held out whole (heldout.txt)."
)
@click.pass_context
def federated_clients(
    ctx: click.Context,
    corpus: Path | None,
    exclude: tuple[str, ...],
    out: Path,
    sentences_per_client: int,
    max_clients: int | None,
    heldout_clients: int,
) -> None:
    """Cut the cached books (minus --exclude) into pseudo-user clients for federated training."""
    from userlibri.lm.federated_data import split_corpus_clients
    from userlibri.lm.users import DEFAULT_CORPUS_DIR

    summary = split_corpus_clients(
        corpus or DEFAULT_CORPUS_DIR,
        out,
        exclude=exclude,
        sentences_per_client=sentences_per_client,
        max_clients=max_clients,
        heldout_clients=heldout_clients,
        seed=_seed(ctx),
    )
    books = sorted({c["book"] for c in summary["clients"]})
    click.echo(
        f"{out}: {len(summary['clients'])} clients ({summary['train_sentences']} sentences) from books "
        f"{', '.join(books)}; {len(summary['heldout'])} held out ({summary['heldout_sentences']} sentences)"
    )


COMMANDS = [federated, federated_clients]
