#!/usr/bin/env bash
# Train the shipped mini acoustic model further (phase 5) without the checkpoints of the runs that
# made it: `asr train --init-from userlibri/models/mini` starts from its int8 weights (dequantized),
# tokenizer and CMVN. Data: the ~23 h corpus of recipes/mini/train_am.sh with its speed and noise
# copies, plus Kokoro speech: phase 4's eleven voices (conf/synth-kokoro.yaml, ~1.9 h) and 40
# random blends of its five voices (conf/synth-kokoro-blends.yaml, ~0.7 h); conf/am-blends.yaml
# says how. (The blends alone, without phase 4's voices, for 1,000 steps: test-clean 0.6 points
# better, test-other 0.6-2.2 worse than the shipped model; not shipped. With phase 4's voices kept,
# 1,500 steps: test-other 0.3-2.2 better, test-clean within 0.7 either side.) Then export and ship, by
# default NOT over the shipped model: compare $work/mini-blends/MODEL_CARD.md with
# userlibri/models/mini/MODEL_CARD.md, then rerun stage 4 with --ship-to userlibri/models/mini.
# A rerun with --name N trains the next phase from the shipped model into $work/exp-N,
# $work/model-N and $work/mini-N (--config YAML: another experiment config; --steps S: a
# learning-rate schedule of S steps instead of the config's). The shipped model is phase 8:
# --name long3 --steps 4000 from phase 7 (--name long2), from phase 6 (--name long), each 4,000
# steps from the one before, starting at phase 5 (the same data on a longer schedule, three times;
# phase 6: test-clean 1.5-2.4 points and test-other 0.1-1.6 better than phase 5; phase 7: test-clean
# 1.5-2.6 and test-other 1.2-1.9 better than phase 6; phase 8: test-clean 0.6-2.1 better, test-other
# 0.4-0.6 better in three cells and 0.7 worse in non-streaming CTC). recipes/mini/train_am.sh stage 5
# runs phases 5 to 8 after phase 4, from scratch.
#
#   recipes/mini/continue_am.sh [--work DIR] [--jobs N] [--stage N] [--stop-stage N] [--seed S]
#                               [--max-minutes M] [--max-steps N] [--threads T] [--device D]
#                               [--from DIR] [--ship-to DIR] [--name N] [--config YAML]
#                               [--steps S] [--extra-corpora "DIR:SYNTH_YAML ..."]
#
# --extra-corpora adds more speech to stages 1 and 2: each DIR ($work/DIR) is synthesized from
# conf/SYNTH_YAML in stage 1 and added to training with --add-train in stage 2, beside phase 4's
# voices and the 40 blends; e.g. the phase-9 candidate, 80 more random blends:
#   --name blends2 --steps 4000 --extra-corpora LibriSpeech-kokoro-blends2:synth-kokoro-blends2.yaml
#
# Stages: 0 book texts; 1 synthesize the corpora missing from $work (shared with train_am.sh; on 2
# idle cores: ~7 min for the main corpus, 39-54 min for phase 4's Kokoro voices, ~17 min for the
# blends); 2 train $work/exp-$name (features ~10 min if train_am.sh has not cached them; 1,500
# steps 28-36 min on one CPU core; --max-minutes/--max-steps stop with a checkpoint, a rerun
# resumes); 3 export $work/model-$name; 4 ship (greedy WER per split, voice and mode; ~1.5 min).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/recipes/lib.sh"
work=work/am
jobs=$(nproc)
stage=0
stop_stage=100
seed=0
max_minutes=0
max_steps=0
threads=1
device=auto
from=$root/userlibri/models/mini
ship_to=
name=blends
config=$here/conf/am-blends.yaml
steps=0
extra_corpora=
parse_flags work jobs stage stop_stage seed max_minutes max_steps threads device from ship_to name config \
  steps extra_corpora -- "$@"
ship_to=${ship_to:-$work/mini-$name}
userlibri="$root/.venv/bin/userlibri --seed $seed"
books=$(books_cache)
exp=$work/exp-$name
model=$work/model-$name
mkdir -p "$work"

if run 0; then
  echo "== stage 0: fetch public-domain book texts into $books"
  $userlibri corpora fetch --cache "$books"
fi
if run 1; then
  # shellcheck disable=SC2086  # extra_corpora is a space-separated list
  for pair in LibriSpeech:synth-train.yaml LibriSpeech-kokoro:synth-kokoro.yaml \
    LibriSpeech-kokoro-blends:synth-kokoro-blends.yaml $extra_corpora; do
    out=$work/${pair%%:*} conf=$here/conf/${pair#*:}
    if [[ -f $out/synth.json ]]; then
      echo "== stage 1: $out exists (rm -r it to synthesize it again)"
    else
      echo "== stage 1: synthesize $out ($conf)"
      $userlibri synth --books "$books" --out "$out" --config "$conf" --jobs "$jobs" --overwrite
    fi
  done
fi
if run 2; then
  echo "== stage 2: train $exp from $from (a rerun resumes)"
  limit=()
  if [[ $max_minutes != 0 ]]; then limit+=(--max-minutes "$max_minutes"); fi
  if [[ $steps != 0 ]]; then
    limit+=(--schedule-steps "$steps")
    if [[ $max_steps == 0 ]]; then max_steps=$steps; fi
  fi
  if [[ $max_steps != 0 ]]; then limit+=(--max-steps "$max_steps"); fi
  extra=()
  for pair in $extra_corpora; do extra+=(--add-train "$work/${pair%%:*}"); done
  resume=()
  if compgen -G "$exp/checkpoints/ckpt-*.pt" > /dev/null; then resume=(--resume); fi
  $userlibri asr train --config "$config" --data "$work/LibriSpeech" --out "$exp" \
    --init-from "$from" --add-train "$work/LibriSpeech-kokoro" --add-train "$work/LibriSpeech-kokoro-blends" \
    "${extra[@]}" --features-dir "$work/features" --threads "$threads" --device "$device" "${resume[@]}" "${limit[@]}"
fi
if run 3; then
  echo "== stage 3: export to ONNX (float, int8, ORT)"
  $userlibri asr export --checkpoint "$exp/model-avg.pt" --out "$model"
fi
if run 4; then
  echo "== stage 4: ship the int8 model with its greedy WER and model card to $ship_to"
  $userlibri asr ship --exp "$exp" --model "$model" --data "$work/LibriSpeech" --out "$ship_to" \
    --precisions int8 --hardware "$(nproc) CPU cores, $threads training thread(s), device $device"
  echo "compare $ship_to/MODEL_CARD.md with $from/MODEL_CARD.md"
fi
