#!/usr/bin/env bash
# Train, export and ship the mini acoustic model (the one in userlibri/models/mini):
# ~23 h of speech synthesized from three training books by six voices, and ~1.9 h by eleven Kokoro
# voices (phase 4) -> a 4.15M-parameter
# Conformer (CTC + stateless transducer, dynamic chunks, 34 pieces) -> ONNX float/int8/ORT -> the
# shipped int8 directory (9 MB; the ORT files stay in $work/model) with its greedy WER per test
# split and MODEL_CARD.md.
#
#   recipes/mini/train_am.sh [--work DIR] [--jobs N] [--stage N] [--stop-stage N] [--seed S]
#                            [--max-minutes M] [--threads T] [--device D] [--ship-to DIR]
#
# Time on 2 CPU cores: synth ~7 min (+ ~39 min for the Kokoro corpus), features ~2.5 min,
# training ~80 min on one core (5,000 CTC-only steps at ~1.9/s, then 2,000 joint steps at
# ~0.9/s), phase 2 ~52 min (2,600 steps with
# the speed-1.15 copy of the corpus, conf/am-sp.yaml; features ~1.5 min), phase 3 ~50 min (2,400
# steps with a noisy, reverberant copy, conf/am-noise.yaml; features ~4.5 min), phase 4 ~31 min
# (1,600 steps with the Kokoro corpus added, conf/am-kokoro.yaml; features ~0.5 min); --max-minutes
# stops early with a checkpoint and a rerun of stage 2 resumes; export ~1.5 min, evaluation
# ~1.5 min. With a GPU: --device cuda (and more epochs in conf/am.yaml).
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
threads=1
device=auto
ship_to=$root/userlibri/models/mini
parse_flags work jobs stage stop_stage seed max_minutes threads device ship_to -- "$@"
userlibri="$root/.venv/bin/userlibri --seed $seed"
books=$(books_cache)
mkdir -p "$work"

if run 0; then
  echo "== stage 0: fetch public-domain book texts into $books"
  $userlibri corpora fetch --cache "$books"
fi
if run 1; then
  echo "== stage 1: synthesize the training corpus (train ~23 h, dev, test-clean, test-other)"
  $userlibri synth --books "$books" --out "$work/LibriSpeech" --config "$here/conf/synth-train.yaml" \
    --jobs "$jobs" --overwrite
  echo "== stage 1: synthesize the Kokoro voices' training corpus (~1.8 h, for phase 4)"
  $userlibri synth --books "$books" --out "$work/LibriSpeech-kokoro" --config "$here/conf/synth-kokoro.yaml" \
    --jobs "$jobs" --overwrite
fi
# continue FROM TO CONF STEPS [SCHEDULE [ARGS...]]: once run FROM has reached its last step, a copy
# of it (TO) resumes with CONF's training changes to step STEPS, its learning-rate schedule
# stretched to SCHEDULE (default STEPS), ARGS passed on; returns 1 while FROM is unfinished.
continue_run() {
  local from=$work/$1 to=$work/$2 conf=$3 steps=$4 schedule=${5:-$4}
  shift $(($# < 5 ? $# : 5))
  grep -q '"reason": "max_steps"' "$from/train_log.jsonl" || return 1
  if [[ ! -d $to ]]; then rm -rf "$to.tmp" && cp -r "$from" "$to.tmp" && mv "$to.tmp" "$to"; fi
  $userlibri asr train --config "$here/conf/$conf" --data "$work/LibriSpeech" --out "$to" \
    --features-dir "$work/features" --threads "$threads" --device "$device" --resume \
    --schedule-steps "$schedule" --max-steps "$steps" "${limit[@]}" "$@" || exit  # (set -e is off in `if !`)
}
if run 2; then
  echo "== stage 2: train (resumes from the newest checkpoint in $work/exp)"
  resume=()
  if compgen -G "$work/exp/checkpoints/ckpt-*.pt" > /dev/null; then resume=(--resume); fi
  limit=()
  if [[ $max_minutes != 0 ]]; then limit=(--max-minutes "$max_minutes"); fi
  $userlibri asr train --config "$here/conf/am.yaml" --data "$work/LibriSpeech" --out "$work/exp" \
    --features-dir "$work/features" --threads "$threads" --device "$device" "${resume[@]}" "${limit[@]}"
  # Phase 2: + speed 1.15 to step 9,600 (conf/am-sp.yaml says why); phase 3: + a noisy,
  # reverberant copy of the corpus to step 12,000 (conf/am-noise.yaml); phase 4: + the Kokoro
  # voices to step 13,600 (conf/am-kokoro.yaml). Each resumes a copy of the phase before once that
  # one has finished.
  echo "== stage 2, phase 2: + speed 1.15 to step 9600 (resumes $work/exp-sp)"
  if ! continue_run exp exp-sp am-sp.yaml 9600; then
    echo "phase 1 has not reached its last step yet: rerun stage 2 to resume it" >&2
    exit 1
  fi
  echo "== stage 2, phase 3: + noise and reverberation to step 12000 (resumes $work/exp-noise)"
  if ! continue_run exp-sp exp-noise am-noise.yaml 12000; then
    echo "phase 2 has not reached its last step yet: rerun stage 2 to resume it" >&2
    exit 1
  fi
  echo "== stage 2, phase 4: + the Kokoro voices to step 13600 (resumes $work/exp-kokoro)"
  if ! continue_run exp-noise exp-kokoro am-kokoro.yaml 13600 15200 --add-train "$work/LibriSpeech-kokoro"; then
    echo "phase 3 has not reached its last step yet: rerun stage 2 to resume it" >&2
    exit 1
  fi
fi
if run 3; then
  echo "== stage 3: export to ONNX (float, int8, ORT)"
  $userlibri asr export --checkpoint "$work/exp-kokoro/model-avg.pt" --out "$work/model"
fi
if run 4; then
  echo "== stage 4: ship the int8 model with its greedy WER and model card to $ship_to"
  $userlibri asr ship --exp "$work/exp-kokoro" --model "$work/model" --data "$work/LibriSpeech" --out "$ship_to" \
    --precisions int8 --hardware "$(nproc) CPU cores, $threads training thread(s), device $device"
fi
