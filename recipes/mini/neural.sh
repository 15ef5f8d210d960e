#!/usr/bin/env bash
# Neural per-user LMs for the mini UserLibri build (run after recipes/mini/run.sh stage 3):
# a background LSTM LM on general text (books no test user reads + State of the Union), then per
# user book a non-private fine-tune and DP-SGD fine-tunes at several epsilons, a DP word n-gram
# sampled from each DP-SGD LM (into $work/lm/<book>/eps<E>, where `bench wer` looks), then the
# held-out perplexity table next to the n-gram LMs. About 25 minutes on 2 cores.
# The LMs get their own 500-piece tokenizer trained on the background text (--tokenizer FILE picks
# another): `bench wer` fuses them into the acoustic model's beam search word by word
# (userlibri/lm/neural_word.py), whatever the acoustic model's pieces. (With the shipped model's 34
# pieces as the LM tokenizer, sequences are ~4x longer: 3-7 s per background-LM step, 1-2.5 h.)
# Stages (--stage N resumes): 0 background text, tokenizer and LM; 1 personal LMs; 2 DP n-grams;
# 3 perplexity table. Measured on 2 shared cores: stages 0-1 about 31 min, stage 2 about 7 min.
#
#   recipes/mini/neural.sh [--work DIR] [--bg-sentences N] [--epsilons "1 4 8"] [--tokenizer FILE]
#                          [--stage N] [--jobs N] [--books "161 ..."]
# (--books: stages 1-2 for these user books only, e.g. after their text changed.)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/recipes/lib.sh"
work=work/demo
bg_sentences=40000
epsilons="1 4 8"
tokenizer=
stage=0
jobs=$(nproc)
only_books=
parse_flags work bg_sentences epsilons tokenizer stage jobs books=only_books -- "$@"
if [[ $tokenizer == own ]]; then tokenizer=; fi  # "own": the default
py="$root/.venv/bin/python"
userlibri="$root/.venv/bin/userlibri"
books=$(books_cache)
nlm="$work/nlm"
mkdir -p "$nlm"
if [[ ! -d $work/lm ]]; then
  echo "$work/lm: expected the per-user LMs of recipes/mini/run.sh (stage 3), found no directory" >&2
  exit 2
fi
user_books=$(cd "$work/lm" && ls -d [0-9]* | sort)
all_books=$user_books
if [[ -n $only_books ]]; then
  for b in $only_books; do
    [[ -d $work/lm/$b ]] || { echo "--books: $b is not a user book in $work/lm ($(echo $all_books))" >&2; exit 2; }
  done
  user_books=$only_books
fi

if run 0; then
  echo "== background text: books no test user reads ($(echo $all_books)) are excluded"
  "$py" - "$books" "$nlm" "$bg_sentences" $all_books <<'PY'
import random, sys
from pathlib import Path
from userlibri.lm.users import background_sentences
corpus, out, n, exclude = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
sents, per_book = background_sentences(corpus, exclude, progress=False)
sents = [s for s in sents if len(s.split()) >= 3]
random.Random(0).shuffle(sents)
(out / "bg_train.txt").write_text("\n".join(sents[:n]) + "\n", encoding="utf-8")
(out / "bg_dev.txt").write_text("\n".join(sents[n:n + 2000]) + "\n", encoding="utf-8")
print(f"{min(n, len(sents))} training sentences from {len(per_book)} books")
PY
  if [[ -n $tokenizer ]]; then
    echo "== tokenizer: $tokenizer"
    mkdir -p "$nlm/tok"
    cp "$tokenizer" "$nlm/tok/tokenizer.model"
  else
    echo "== tokenizer: 500 pieces trained on the background text"
    $userlibri lm tokenizer --input "$nlm/bg_train.txt" --out "$nlm/tok" --vocab-size 500
  fi
  echo "== background LSTM LM"
  $userlibri lm neural-train --input "$nlm/bg_train.txt" --tokenizer "$nlm/tok" --out "$nlm/background" \
    --epochs 2 --threads 2 --dev "$nlm/bg_dev.txt"
fi

if run 1; then
  for book in $user_books; do
    echo "== book $book: personal LMs (non-private, DP-SGD at epsilon $epsilons)"
    train="$work/lm/$book/train.txt"
    dev="$work/lm/$book/heldout.txt"
    $userlibri lm neural-personalize --background "$nlm/background" --input "$train" --tokenizer "$nlm/tok" \
      --out "$nlm/$book/inf" --threads 2 --dev "$dev"
    for eps in $epsilons; do
      $userlibri lm neural-personalize --background "$nlm/background" --input "$train" --tokenizer "$nlm/tok" \
        --out "$nlm/$book/eps$eps" --privacy dp-sgd --target-epsilon "$eps" --threads 2 --dev "$dev"
    done
  done
fi

if run 2; then
  echo "== DP n-gram LMs: sentences sampled from each DP-SGD LM (post-processing: same epsilon), $jobs at a time"
  for book in $user_books; do
    for eps in $epsilons; do
      echo "$book $eps"
    done
  done | xargs -P "$jobs" -n 2 sh -c '"$0" lm sampled-ngram --neural "$1/$3/eps$4" --tokenizer "$1/tok" \
    --out "$2/lm/$3/eps$4" --background "$2/lm/background/ngram.arpa" > "$1/$3/sampled-eps$4.log" 2>&1 \
    && echo "book $3 eps $4: $(tail -n 1 "$1/$3/sampled-eps$4.log")"' "$userlibri" "$nlm" "$work"
fi

if run 3; then
  echo "== held-out word perplexity: n-gram and neural LMs"
  neural=(--neural "neural-bg=$nlm/background" --neural "neural-personal=$nlm/{book}/inf")
  for eps in $epsilons; do neural+=(--neural "dp-eps$eps=$nlm/{book}/eps$eps"); done
  $userlibri lm eval --users-dir "$work/lm" --tokenizer "$nlm/tok" "${neural[@]}" --json "$nlm/eval.json"
fi
