#!/usr/bin/env bash
# Neural per-user LMs for the mini UserLibri build (run after recipes/mini/run.sh stage 3):
# a background LSTM LM on general text (books no test user reads + State of the Union), then per
# user book a non-private fine-tune and DP-SGD fine-tunes at several epsilons, a DP word n-gram
# sampled from each DP-SGD LM (into $work/lm/<book>/eps<E>, where `bench wer` looks), then the
# held-out perplexity table next to the n-gram LMs. About 25 minutes on 2 cores.
# The LMs use the shipped acoustic model's tokenizer when one is shipped (so that `bench wer` can
# fuse them into its beam search), else --tokenizer, else (or with --tokenizer own) a 500-piece one
# trained on the text. The shipped mini model's 34 pieces make sequences ~4x longer than 500 pieces:
# measured 3-7 s per background-LM step on one shared core, ~1-2.5 h for the background LM alone.
#
#   recipes/mini/neural.sh [--work DIR] [--bg-sentences N] [--epsilons "1 4 8"] [--tokenizer FILE|own]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=work/demo
bg_sentences=40000
epsilons="1 4 8"
tokenizer=
while (($#)); do
  case "$1" in
    --work) work=$2; shift 2 ;;
    --bg-sentences) bg_sentences=$2; shift 2 ;;
    --epsilons) epsilons=$2; shift 2 ;;
    --tokenizer) tokenizer=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
py="$root/.venv/bin/python"
userlibri="$root/.venv/bin/userlibri"
books=${USERLIBRI_CACHE:-$HOME/.cache/userlibri}/corpora
nlm="$work/nlm"
mkdir -p "$nlm"
user_books=$(cd "$work/lm" && ls -d [0-9]* | sort)

echo "== background text: books no test user reads ($(echo $user_books)) are excluded"
"$py" - "$books" "$nlm" "$bg_sentences" $user_books <<'PY'
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

if [[ -z $tokenizer ]]; then
  tokenizer=$("$py" -c 'from userlibri.models import model_dir, shipped_models
if shipped_models(): print(model_dir() / "tokenizer.model")')
fi
if [[ $tokenizer == own ]]; then tokenizer=; fi
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

echo "== DP n-gram LMs: sentences sampled from each DP-SGD LM (post-processing: same epsilon)"
for book in $user_books; do
  for eps in $epsilons; do
    $userlibri lm sampled-ngram --neural "$nlm/$book/eps$eps" --tokenizer "$nlm/tok" \
      --out "$work/lm/$book/eps$eps" --background "$work/lm/background/ngram.arpa"
  done
done

echo "== held-out word perplexity: n-gram and neural LMs"
neural=(--neural "neural-bg=$nlm/background" --neural "neural-personal=$nlm/{book}/inf")
for eps in $epsilons; do neural+=(--neural "dp-eps$eps=$nlm/{book}/eps$eps"); done
$userlibri lm eval --users-dir "$work/lm" --tokenizer "$nlm/tok" "${neural[@]}" --json "$nlm/eval.json"
