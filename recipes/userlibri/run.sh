#!/usr/bin/env bash
# UserLibri on a real LibriSpeech download: the stages of recipes/mini/run.sh after synthesis.
# Build the UserLibri release (55 test-clean + 52 test-other users; dev-clean/dev-other users for
# tuning), per-user word 4-grams, held-out perplexity, optionally the neural and DP LMs, then the
# per-user WER benchmark and the on-device cost of the acoustic model.
#
#   recipes/userlibri/run.sh --librispeech DIR --books DIR --model DIR [--work DIR] [--background ARPA]
#                            [--corpus DIR] [--tune-split auto] [--neural] [--jobs N]
#                            [--stage N] [--stop-stage N] [--seed S]
#
# --librispeech: the LibriSpeech root (CHAPTERS.TXT, BOOKS.TXT, test-clean/, test-other/,
#   dev-clean/, dev-other/; openslr.org/12). --books: the books' Project Gutenberg texts as
#   <book_id>.txt or a books/ tree (LibriSpeech's original-books.tar.gz unpacked). --model: an
#   exported acoustic model (`userlibri asr export`) trained on LibriSpeech with
#   recipes/userlibri/conf/am-librispeech.yaml (a GPU job: see that file); the shipped mini model
#   only knows synthesized voices. --background: a public word ARPA for the background LM (e.g.
#   LibriSpeech's 4-gram, upper-cased); default: built from the --corpus book cache.
#   --tune-split: auto tunes the LM weights of test-clean on the dev-clean users and of test-other
#   on the dev-other users (bench wer --help: one split for both, or explicit pairs).
#
# Not run on this project's CPU machines (no LibriSpeech offline). Expected times on 2 cores,
# scaled from the mini recipe's measurements: build ~15 min (107 books); per-user 4-grams ~25 min;
# perplexity ~10 min; --neural (recipes/mini/neural.sh per book: ~6 min per book on 2 cores) ~11 h;
# bench wer with the n-gram LMs: 21 h of audio (test + dev), ~8 decodes each for tuning and testing
# at a total RTF of ~0.02-0.04 for a 15M-parameter model, ~4-8 h; perf ~1 min.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/recipes/lib.sh"
librispeech=
books=
model=
work=work/userlibri
background=
corpus=$(books_cache)
tune_split=auto
neural=0
jobs=$(nproc)
stage=0
stop_stage=100
seed=0
parse_flags librispeech books model work background corpus tune_split neural? jobs stage stop_stage seed -- "$@"
for name in librispeech books model; do
  if [[ -z ${!name} ]]; then echo "missing --$name (see --help)" >&2; exit 2; fi
done
for dir in "$librispeech" "$books" "$model"; do
  if [[ ! -d $dir ]]; then echo "not a directory: $dir" >&2; exit 2; fi
done
userlibri="$root/.venv/bin/userlibri --seed $seed"
mkdir -p "$work"

if run 0; then
  echo "== stage 0: UserLibri release from $librispeech (users: test-clean, test-other; dev users for tuning)"
  $userlibri build --librispeech "$librispeech" --books-dir "$books" --out "$work/UserLibri" --workers "$jobs"
fi
if run 1; then
  echo "== stage 1: per-user LMs: background 4-gram, one 4-gram per book, tuned interpolation"
  bg=()
  if [[ -n $background ]]; then bg=(--background "$background"); fi
  $userlibri lm users --dataset "$work/UserLibri" --out "$work/lm" --corpus "$corpus" "${bg[@]}"
fi
if run 2; then
  echo "== stage 2: held-out word perplexity per user book"
  $userlibri lm eval --users-dir "$work/lm"
fi
if run 3 && ((neural)); then
  echo "== stage 3: neural per-user LMs, DP-SGD fine-tunes and DP n-grams (recipes/mini/neural.sh)"
  bash "$root/recipes/mini/neural.sh" --work "$work" --jobs "$jobs"
fi
if run 4; then
  echo "== stage 4: per-user WER, LM weights tuned on dev users (--tune-split $tune_split)"
  kinds=ngram
  lms=background,personal,interpolated
  extra=()
  if ((neural)); then kinds=ngram,neural; lms=$lms,dp; extra=(--neural-dir "$work/nlm"); fi
  $userlibri bench wer --dataset "$work/UserLibri" --lm-dir "$work/lm" "${extra[@]}" --model "$model" \
    --out "$work/bench" --kinds "$kinds" --lms "$lms" --tune-split "$tune_split" --jobs "$jobs" --quiet
  cat "$work/bench/results.md"
fi
if run 5; then
  echo "== stage 5: on-device cost (RTF, latency, memory) with the first user book's LM"
  book=$(cd "$work/lm" && ls -d [0-9]* | sort | head -n 1)
  $userlibri bench perf --model "$model" --manifest "$work/UserLibri/manifests/test-clean.jsonl" \
    --lm "$work/lm/$book" --out "$work/perf.json" --markdown "$work/perf.md" --quiet
fi
