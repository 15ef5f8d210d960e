"""``userlibri asr inspect``: encoder health of a checkpoint (is the model listening to the audio?).

Defines ``command`` (named ``inspect``); ``cli/__init__.py`` attaches it to the ``asr`` group.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("inspect")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="model-avg.pt or checkpoints/ckpt-N.pt of 'userlibri asr train'.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="LibriSpeech-layout root or a directory of <split>.jsonl manifests.",
)
@click.option("--split", default="dev", show_default=True)
@click.option("--n", "count", type=int, default=8, show_default=True, help="Utterances to run.")
def command(checkpoint: Path, data: Path, split: str, count: int) -> None:
    """Per-layer temporal variation, attention variation and blank rate of a checkpoint (JSON).

    A collapsed encoder (time_std falling towards 0 through the layers, blank_prob near 1 and
    nonblank_frames near 0 after hundreds of steps) will not leave the CTC blank plateau: lower the
    learning rate and restart rather than wait.
    """
    from userlibri.asr.data import featurize, load_utterances
    from userlibri.asr.inspect import encoder_health
    from userlibri.asr.train import STATS_FILE, load_model
    from userlibri.errors import UserLibriError
    from userlibri.features import FeatureStats

    if count < 1:
        raise click.BadParameter(f"expected >= 1, found {count}", param_hint="--n")
    model, info = load_model(checkpoint)
    stats = info["feature_stats"]
    if stats is None:  # a raw checkpoint: the statistics live in the experiment directory
        exp = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
        if not (exp / STATS_FILE).is_file():
            raise UserLibriError(
                f"{exp / STATS_FILE}: expected the training run's feature statistics for {checkpoint}"
            )
        stats = FeatureStats.load(exp / STATS_FILE)
    utts = load_utterances(data, split)[:count]
    if not utts:
        raise UserLibriError(f"{data}/{split}: expected utterances, found none")
    feats = [featurize(u.audio, info["feature_config"]) for u in utts]
    result = encoder_health(model, feats, stats)
    result["checkpoint"] = str(checkpoint)
    result["step"] = info["step"]
    click.echo(json.dumps(result, indent=1))
