#!/usr/bin/env bash
# Train, export and ship the mini acoustic model (the one in userlibri/models/mini), from scratch:
# ~23 h of speech synthesized from three training books by six voices, and ~1.9 h by eleven Kokoro
# voices (phase 4) -> a 4.15M-parameter
# Conformer (CTC + stateless transducer, dynamic chunks, 34 pieces) -> ONNX float/int8/ORT -> an
# int8 directory (9 MB; the ORT files stay in $work/model) with its greedy WER per test split and
# MODEL_CARD.md: phase 4 in $work/mini-kokoro; then stage 5 runs recipes/mini/continue_am.sh four
# times: phase 5 (40 random Kokoro blends added, 1,500 steps, into $work/mini-blends), phase 6 (the
# same data on a 4,000-step schedule, into $work/mini-long), phase 7 (the same again from phase 6,
# into $work/mini-long2) and phase 8 (the same again from phase 7, into --ship-to, default
# userlibri/models/mini: the shipped model).
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
# ~1.5 min; stage 5: the blends' synthesis ~17 min, phase 5 ~36 min, phases 6, 7 and 8 ~64-90 min
# each on a free core (--max-minutes applies to each; a rerun of stage 5 resumes). With a GPU: --device cuda
# (and more epochs in conf/am.yaml).
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
  echo "== stage 4: phase 4's int8 model with its greedy WER and model card to $work/mini-kokoro"
  $userlibri asr ship --exp "$work/exp-kokoro" --model "$work/model" --data "$work/LibriSpeech" \
    --out "$work/mini-kokoro" --precisions int8 \
    --hardware "$(nproc) CPU cores, $threads training thread(s), device $device"
fi
if run 5; then
  # Phases 5 to 8 start from the int8 model of the phase before (asr train --init-from); each is
  # exported and shipped only once its training has reached its last step (a rerun resumes it).
  common=(--work "$work" --jobs "$jobs" --seed "$seed" --max-minutes "$max_minutes" --threads "$threads"
    --device "$device")
  phase() {  # NAME FROM SHIP_TO [ARGS...]
    local name=$1 from=$2 to=$3
    shift 3
    "$here/continue_am.sh" "${common[@]}" --stage 1 --stop-stage 2 --from "$from" --name "$name" "$@"
    if ! grep '"event": "stop"' "$work/exp-$name/train_log.jsonl" | tail -n 1 | grep -q '"reason": "max_steps"'; then
      echo "$work/exp-$name has not reached its last step yet: rerun stage 5 to resume it" >&2
      exit 1
    fi
    "$here/continue_am.sh" "${common[@]}" --stage 3 --from "$from" --name "$name" --ship-to "$to" "$@"
  }
  echo "== stage 5, phase 5: + 40 Kokoro blends, 1,500 steps from $work/mini-kokoro"
  phase blends "$work/mini-kokoro" "$work/mini-blends"
  echo "== stage 5, phase 6: the same data, a 4,000-step schedule from $work/mini-blends"
  phase long "$work/mini-blends" "$work/mini-long" --steps 4000
  echo "== stage 5, phase 7: the same again from $work/mini-long"
  phase long2 "$work/mini-long" "$work/mini-long2" --steps 4000
  echo "== stage 5, phase 8: the same again from $work/mini-long2, to $ship_to"
  phase long3 "$work/mini-long2" "$ship_to" --steps 4000
fi
