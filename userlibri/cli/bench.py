"""``userlibri bench``: benchmarks. ``bench decoder`` runs ours, pyctcdecode and torchaudio's
flashlight ``ctc_decoder`` on the same CTC log-probs with the same KenLM model."""

from __future__ import annotations

import json
from pathlib import Path

import click

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("bench")
def command() -> None:
    """Benchmarks (results as JSON under benchmarks/results/)."""


@command.command("decoder")
@click.option("--lm", type=_FILE, required=True, help="KenLM word model (binary or ARPA) for every decoder.")
@click.option(
    "--manifest", type=_FILE, default=None, help="jsonl manifest: references (and audio for --model)."
)
@click.option(
    "--model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Exported model: log-probs from its full-context encoder on the manifest audio.",
)
@click.option("--logprobs", type=_FILE, default=None, help="Saved log-probs (.npz from --save-logprobs).")
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Sentencepiece model/dir (alone: synthetic peaky log-probs of the manifest transcripts).",
)
@click.option("--save-logprobs", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--beam", type=int, default=10, show_default=True)
@click.option("--lm-weight", type=float, default=0.5, show_default=True)
@click.option(
    "--word-bonus",
    type=float,
    default=0.0,
    show_default=True,
    help="pyctcdecode beta / flashlight word_score (ours has none: keep 0 to compare).",
)
@click.option(
    "--repeats",
    type=int,
    default=7,
    show_default=True,
    help="Interleaved runs of every decoder; the median is reported.",
)
@click.option("--limit", type=int, default=0, help="Only the first N utterances (0: all).")
@click.option("--peers", default="ours,pyctcdecode,flashlight", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic log-probs.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("benchmarks/results/decoder_peers.json"),
    show_default=True,
)
def decoder_cmd(
    lm: Path,
    manifest: Path | None,
    model: Path | None,
    logprobs: Path | None,
    tokenizer: Path | None,
    save_logprobs: Path | None,
    beam: int,
    lm_weight: float,
    word_bonus: float,
    repeats: int,
    limit: int,
    peers: str,
    seed: int,
    out: Path,
) -> None:
    """Ours vs pyctcdecode vs flashlight on the same CTC log-probs: WER and time per utterance."""
    from userlibri.bench.decoder_peers import (
        LogProbSet,
        PeerBenchConfig,
        format_table,
        model_logprobs,
        run_peer_bench,
        synthetic_logprobs,
    )
    from userlibri.fsio import write_json_atomic
    from userlibri.text.tokenizer import Tokenizer

    if model is not None and logprobs is not None:
        raise click.UsageError("give at most one of --model and --logprobs")
    tok_path = model / "tokenizer.model" if model is not None else tokenizer
    if tok_path is None:
        raise click.UsageError("--tokenizer is needed unless --model gives it")
    tok = Tokenizer.load(tok_path)
    if logprobs is not None:
        data = LogProbSet.load(logprobs)
    else:
        if manifest is None:
            raise click.UsageError("--manifest is needed unless --logprobs gives the data")
        from userlibri.data.manifest import read_manifest

        utts = read_manifest(manifest)
        utts = utts[:limit] if limit else utts
        if model is not None:
            data = model_logprobs(model, [(u.id, u.text, Path(u.audio)) for u in utts])
        else:
            data = synthetic_logprobs([(u.id, u.text) for u in utts], tok, seed)
    if save_logprobs is not None:
        data.save(save_logprobs)
    config = PeerBenchConfig(
        beam=beam,
        lm_weight=lm_weight,
        word_bonus=word_bonus,
        repeats=repeats,
        peers=tuple(p.strip() for p in peers.split(",") if p.strip()),
    )
    results = run_peer_bench(data, lm, tok, config)
    write_json_atomic(out, results)
    click.echo(format_table(results))
    click.echo(json.dumps({k: v for k, v in results.items() if k.startswith("speedup")}))
    click.echo(f"wrote {out}")
