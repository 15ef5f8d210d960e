#!/usr/bin/env bash
# Every WER and cost table of the README again, after a new acoustic model is shipped to
# userlibri/models/mini (e.g. by recipes/mini/continue_am.sh --ship-to userlibri/models/mini), on a
# work directory that the other mini recipes have filled. Decodes are cached per model, LM and
# settings (bench wer's cache), so a rerun with nothing changed takes seconds per stage.
#
#   recipes/mini/rebench.sh [--work DIR] [--jobs N] [--stage N] [--stop-stage N] [--seed S]
#
# Stages (measured 2026-12-06 with the phase-5 model and nothing cached, 2 cores; with the phase-6
# model, stages 0, 1 and 2 run at once as `--stage 0 --stop-stage 0` beside `--stage 1 --stop-stage
# 2 --jobs 1`: 53, ~7 and 60 min, all done in 71 min; then stage 3 alone, 3 min. With the phase-7
# model and the demo's dev-other split, stage 0 96 min beside stage 1's 18; stage 2 alone afterwards
# ~15 min: a niced stage 2 beside stage 0's two workers gets ~10% of a core. Tuning the n-grams on
# the full 4 x 4 grid instead of the coordinate search, with the coordinate search's points cached:
# stage 0 ~7 min for the new n-gram points (one job), stage 1 5.5 min; nothing cached, expect
# stage 0 ~10 min and stage 1 ~10 min longer than the times above. With the phase-8 model and the
# demo's 4 dev-clean + 4 dev-other users: stage 0 58 min with the dev-clean points and part of
# dev-other's decoded beforehand (~2 h with nothing cached) beside stage 1's 20 min; stage 2 alone
# 23 min on one core; stage 3 4.5 min. After the bigram look-ahead (2026-12-07, a new machine: the n-gram
# decodes, not the neural ones, change): stage 1 20.7 min with one job beside recipes/mini/neural.sh
# (55 min from scratch); the n-gram rows of stage 0 as run.sh --stage 5 --jobs 1 beside it 21.8 min,
# plus the DP n-gram rows 6 min; stage 3 3.2 min. Then the neural rows: stage 0 35 min with 569 of
# its neural points decoded beforehand, and 36 min more once the neural LMs got the full 4 x 4 grid
# too (an estimated 3 h for stage 0 with nothing cached)):
#   0 recipes/mini/run.sh --stage 5: per-user WER, n-gram LMs, and with --neural-dir $work/nlm
#     (when recipes/mini/neural.sh made it) the neural and DP LMs too: the README's first two
#     tables and the privacy table (77 min beside another bench for 39 of them; n-gram only ~5 min)
#   1 the transducer paragraph: bench wer --decoder transducer, n-gram LMs, into
#     $work/bench-transducer (7.6 min, one core)
#   2 the federated WER table: recipes/mini/federated.sh --stage wer, when $work/fed holds the
#     federated LMs (31.5 min, one core)
#   3 make bench's scripts (benchmarks/run_all.py: perf, sizes, throughput; ~4 min; run it with the
#     machine otherwise idle: its timings are the README's perf rows)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/recipes/lib.sh"
work=work/demo
jobs=$(nproc)
stage=0
stop_stage=100
seed=0
parse_flags work jobs stage stop_stage seed -- "$@"
userlibri="$root/.venv/bin/userlibri --seed $seed"

for need in "$work/UserLibri" "$work/lm"; do
  if [[ ! -d $need ]]; then
    echo "$need: expected the output of recipes/mini/run.sh (stages 0-3), found no such directory" >&2
    exit 2
  fi
done

timed() {
  local start=$SECONDS
  "$@"
  echo "   ($(( SECONDS - start )) s)"
}

if run 0; then
  neural=()
  if [[ -d $work/nlm/background ]]; then
    neural=(--neural-dir "$work/nlm")
    echo "== stage 0: per-user WER, n-gram, neural and DP LMs (recipes/mini/run.sh --stage 5 --neural-dir $work/nlm)"
  else
    echo "== stage 0: per-user WER, n-gram LMs ($work/nlm missing: recipes/mini/neural.sh adds the neural and DP rows)"
  fi
  timed "$here/run.sh" --work "$work" --jobs "$jobs" --seed "$seed" --stage 5 --stop-stage 5 "${neural[@]}"
fi
if run 1; then
  echo "== stage 1: per-user WER with the transducer head (modified beam search, beam 10) into $work/bench-transducer"
  timed $userlibri bench wer --dataset "$work/UserLibri" --lm-dir "$work/lm" --out "$work/bench-transducer" \
    --kinds ngram --lms background,personal,interpolated --decoder transducer --beam 10 \
    --lm-weights 0.3,0.5,0.8,1.2 --length-bonuses 0,0.5,1.5,3 --tune-rounds 0 --jobs 1 --quiet --no-plots
  cat "$work/bench-transducer/results.md"
fi
if run 2; then
  if [[ -d $work/fed ]]; then
    echo "== stage 2: per-user WER of the federated LMs (recipes/mini/federated.sh --stage wer)"
    timed "$here/federated.sh" --work "$work" --stage wer
  else
    echo "== stage 2: skipped: no $work/fed (recipes/mini/federated.sh makes the federated LMs)"
  fi
fi
if run 3; then
  echo "== stage 3: make bench's scripts (benchmarks/results/*.json, perf.md)"
  timed "$root/.venv/bin/python" "$root/benchmarks/run_all.py"
fi
