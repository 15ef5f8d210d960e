#!/usr/bin/env bash
# Federated background LM with user-level DP for the mini UserLibri build (run after
# recipes/mini/run.sh stage 3; uses recipes/mini/neural.sh's tokenizer when present).
#
# Setting (as on phones): a small LSTM LM is pre-trained centrally on public text (the State of
# the Union addresses), then fine-tuned on users' private text that never leaves them. The
# private books no test or dev user reads (the KJV and two Austen novels in the demo build) are
# cut into ~1,070 pseudo-users of 40 sentences (20 more held out whole), and the pre-trained LM
# is fine-tuned
#   (a) centrally, non-private, on all the clients' text (same number of sentence visits),
#   (b) with FedAvg, no clipping and no noise (the federated ceiling),
#   (c) with DP-FedAvg and fixed clip norms spanning too small to too large (--clips),
#   (d) with DP-FedAvg and adaptive clipping to the median update norm (Andrew et al. 2021),
# on Flower (in-process simulation backend), clients training with SGD and the server applying
# momentum 0.9 to the noisy average (DP-FedAvgM, as in the paper). One table:
# held-out perplexity of the held-out pseudo-users and of the test users' books, clip, the ratio
# of the noise's norm to the mean clipped update's norm, user-level epsilon; then what a real
# deployment would need for a small epsilon at the same noise per coordinate.
#
# The noise multiplier is deliberately tiny (0.02): with 20 clients a round and 74k parameters,
# noise std z * clip / 20 per coordinate must stay below the averaged update, so epsilon is huge
# and means nothing here; the last lines scale the clients per round up to a meaningful epsilon.
# About 18-25 minutes on one core (nice -n 10, one torch thread; 19.4 min on a new machine on
# 2026-12-07, the other core idle), plus stage wer (below).
#
#   recipes/mini/federated.sh [--work DIR] [--rounds 60] [--per-round 20] [--noise 0.02]
#                             [--clips "0.25 1 4 16"] [--clip-lr 0.5] [--stage all|train|wer]
#
# --stage train stops after that table (it can run beside other jobs; stage wer wants idle cores).
# Then (stage wer, also run alone on an existing build with --stage wer) the per-user WER of every
# LM above fused as the *background* LM into the acoustic model's beam search (word-synchronously,
# over the tokenizer the LM was trained with): `userlibri bench wer` per LM, non-streaming, float
# ONNX, LM weight {0.3, 0.5, 0.8, 1.2} and length bonus {0, 0.5, 1.5, 3} tuned on the dev users
# (bench wer's coordinate search; test-clean only, so `--tune-split auto` tunes on dev-clean, or
# dev where the build has no dev-clean); one table $fed/wer.md of the test-clean average per-user WER
# vs no LM, the public LM and central fine-tuning. Stage wer alone (--stage wer, on work/demo: 8 LMs
# x 4 dev-clean + 4 test-clean users): ~25 min on one core without a decode cache (159-248 s per LM
# with the phase-8 model, the other core busy; 123-160 s, 18 min in all, with it idle); 5 s when
# rerun unchanged (bench wer's decode cache).
#
# The adaptive clip starts at Andrew et al.'s 0.1 but moves with a geometric rate of 0.5, not
# their 0.2: in a 60-round run (theirs had 1,500) it must reach the update norms in ~15 rounds.
# Without server momentum, FedAvg's 60 averaged steps fall far short of central fine-tuning
# (measured: 1004 vs 416 held-out perplexity after 50 rounds with client lr 1).
# Set USERLIBRI to another `userlibri` executable if needed; CORPUS to another book cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/recipes/lib.sh"
work=work/demo
rounds=60
per_round=20
noise=0.02
clips="0.25 1 4 16"
clip_lr=0.5
stage=all
parse_flags work rounds per_round noise clips clip_lr stage -- "$@"
case "$stage" in
  all|train|wer) ;;
  *) echo "--stage: expected all, train or wer, found $stage" >&2; exit 2 ;;
esac
py="$root/.venv/bin/python"
userlibri=(nice -n 10 "${USERLIBRI:-"$root/.venv/bin/userlibri"}")
corpus=${CORPUS:-"$HOME/.cache/userlibri/corpora"}
fed="$work/fed"
data="$fed/data"
mkdir -p "$fed"
start=$SECONDS
stamp() { echo "   ($(( SECONDS - start )) s so far)"; }
names=(public central fedavg)
for c in $clips; do names+=("fixed-$c"); done
names+=(adaptive)

if [[ $stage != wer ]]; then
  # Private: every cached book but the test users' and the public one; public: only sotu.
  user_books=$(cd "$work/lm" && ls -d [0-9]* | sort)
  all_books=$("$py" -c "import json, sys; print(' '.join(sorted(b['book_id'] for b in \
  json.load(open(sys.argv[1]))['books'])))" "$corpus/manifest.json")
  private=(); public=()
  for b in $user_books sotu; do private+=(--exclude "$b"); done
  for b in $all_books; do [[ $b == sotu ]] || public+=(--exclude "$b"); done
  echo "== pseudo-user clients from the books no test user reads ($(echo $user_books) and sotu excluded)"
  "${userlibri[@]}" lm federated-clients --corpus "$corpus" "${private[@]}" --out "$data" \
    --sentences-per-client 40 --heldout-clients 20
  echo "== public text: the State of the Union addresses"
  "${userlibri[@]}" lm federated-clients --corpus "$corpus" "${public[@]}" --out "$fed/public-text" \
    --sentences-per-client 300 > /dev/null

  tok="$work/nlm/tok"
  if [[ ! -f "$tok/tokenizer.model" ]]; then
    tok="$fed/tok"
    "${userlibri[@]}" lm tokenizer --input "$data/all_train.txt" --out "$tok" --vocab-size 500
  fi
  dev="$data/heldout.txt"

  echo "== public LM: pre-trained centrally on the public text"; stamp
  "${userlibri[@]}" lm neural-train --input "$fed/public-text/all_train.txt" --tokenizer "$tok" \
    --out "$fed/public" --embed-dim 32 --hidden-dim 64 --epochs 1 --batch-size 32 --threads 1 \
    --dev "$dev" --no-int8 2> "$fed/public.log"

  # Federated sentence visits: rounds x clients per round x 40 sentences x 2 local epochs.
  epochs=$("$py" -c "import json; d = json.load(open('$data/clients.json')); \
  print(round($rounds * $per_round * 2 * d['train_sentences'] / len(d['clients']) / d['train_sentences'], 3))")
  echo "== (a) central, non-private fine-tuning: $epochs epochs over all clients' text"; stamp
  "${userlibri[@]}" lm neural-personalize --background "$fed/public" --input "$data/all_train.txt" \
    --tokenizer "$tok" --out "$fed/central" --epochs "$epochs" --lr 0.002 --batch-size 32 --threads 1 \
    --dev "$dev" --no-int8 2> "$fed/central.log"

  common=(--data "$data/clients" --tokenizer "$tok" --dev "$dev" --init "$fed/public" --rounds "$rounds"
    --clients-per-round "$per_round" --local-optimizer sgd --local-lr 2.0 --local-epochs 2
    --server-momentum 0.9
    --local-batch-size 8 --threads 1 --eval-every 10 --backend inprocess --no-progress --no-int8)
  federated_run() {  # name, args... (not lib.sh's stage test `run`)
    local name=$1; shift
    rm -rf "${fed:?}/$name" "$fed/$name.fed"
    "${userlibri[@]}" lm federated "${common[@]}" "$@" --out "$fed/$name" 2> "$fed/$name.log"
  }
  echo "== (b) FedAvg(M), no clipping, no noise"; stamp
  federated_run fedavg --noise-multiplier 0 --clip fixed --initial-clip 1e6
  for c in $clips; do
    echo "== (c) DP-FedAvg, fixed clip $c, z=$noise"; stamp
    federated_run "fixed-$c" --noise-multiplier "$noise" --clip fixed --initial-clip "$c"
  done
  echo "== (d) DP-FedAvg, adaptive clip (target quantile 0.5, from 0.1, rate $clip_lr), z=$noise"; stamp
  federated_run adaptive --noise-multiplier "$noise" --clip adaptive --initial-clip 0.1 \
    --target-quantile 0.5 --clip-lr "$clip_lr"

  echo "== held-out perplexity of the test users' books"; stamp
  neural=()
  for n in "${names[@]}"; do neural+=(--neural "$n=$fed/$n"); done
  "${userlibri[@]}" lm eval --users-dir "$work/lm" --tokenizer "$tok" "${neural[@]}" \
    --json "$fed/eval.json" > /dev/null 2> "$fed/eval.log"

  "$py" - "$fed" "$rounds" "$per_round" "$noise" "${names[@]}" <<'PY'
import json, math, statistics, sys
from pathlib import Path
from userlibri.lm.federated import user_level_epsilons

fed, rounds, per_round, noise, names = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5:]
labels = {"public": "public LM (start of all below)", "central": "(a) central fine-tuning, non-private",
          "fedavg": "(b) FedAvgM, no clipping, no noise", "adaptive": "(d) DP-FedAvg, adaptive clip (median)"}
books = json.loads((fed / "eval.json").read_text())["books"]
rows = ["| LM | held-out users ppl | test books ppl (mean) | clip (final) | median update norm | noise / signal | user-level eps |",
        "|---|---|---|---|---|---|---|"]
for name in names:
    info = json.loads((fed / name / "train.json").read_text())
    priv = json.loads((fed / name / "privacy.json").read_text())
    ppl = statistics.mean(b["perplexity"][name] for b in books)
    clip = norm = ratio = "-"
    eps = "none (no DP)"
    if info["kind"] == "federated":
        hist = info["history"]
        norm = f"{statistics.median(hist[-1]['update_norms']):.3g}"
        if info["federated_config"]["initial_clip"] < 1e5:
            clip = f"{info['final_clip']:.3g}"
        if priv["mechanism"] != "none":
            eps = f"{priv['epsilon'][priv['accountant']]:.3g} at delta {priv['delta']:g}"
            # median over rounds of noise norm / norm of the mean clipped update
            ratio = f"{statistics.median(h['noise_norm'] / h['mean_clipped_update_norm'] for h in hist):.2f}"
    dev_ppl = info["dev_perplexity"]
    label = labels.get(name, f"(c) DP-FedAvg, fixed clip {name.removeprefix('fixed-')}")
    rows.append(f"| {label} | {dev_ppl:.0f} | {ppl:.0f} | {clip} | {norm} | {ratio} | {eps} |")
table = "\n".join(rows)
ada = json.loads((fed / "adaptive" / "privacy.json").read_text())
lines = [table, "",
         f"{rounds} rounds, {per_round} of {ada['dataset_size']} clients a round, noise multiplier {noise}. "
         "The training sees only the noise per coordinate, z * clip / clients per round: with m clients "
         f"a round the same noise allows z = {noise} * m / {per_round}. User-level epsilon at delta 1e-7 "
         f"(dp-accounting, RDP and PLD) of {rounds} such rounds if the clients were drawn from 1,000,000 users:"]
for m in (250, 500, 1000, 2000, 5000):
    z = noise * m / per_round
    eps = user_level_epsilons([z] * rounds, m / 1e6, 1e-7)
    shown = ", ".join(f"{k} {v:.3g}" for k, v in sorted(eps.items()))
    lines.append(f"- {m} clients a round: z = {z:g}, epsilon {shown}")
text = "\n".join(lines)
(fed / "table.md").write_text(text + "\n", encoding="utf-8")
print(text)
PY
  echo "== training done in $(( SECONDS - start )) s; table in $fed/table.md"
  [[ $stage == train ]] && exit 0
fi

# Per-user WER with each LM as the background LM: bench wer reads <neural-dir>/background/lm.onnx,
# so each LM gets a view $fed/wer/<name>/background -> ../../<name> (its tokenizer is still found
# from its train.json, or in $fed/tok three directories up). The decodes are cached in each
# $fed/wer/<name>/out, so a rerun only redoes what changed.
echo "== per-user WER, each LM fused as the background LM (stage wer)"; stamp
wer_start=$SECONDS
for n in "${names[@]}"; do
  [[ -f "$fed/$n/lm.onnx" ]] || { echo "missing $fed/$n/lm.onnx: run the whole recipe first" >&2; exit 1; }
  view="$fed/wer/$n"
  mkdir -p "$view"
  ln -sfn "../../$n" "$view/background"
  t0=$SECONDS
  "${userlibri[@]}" bench wer --dataset "$work/UserLibri" --lm-dir "$work/lm" --neural-dir "$view" \
    --out "$view/out" --kinds neural --lms background --modes offline --neural-precision float --splits test-clean \
    --lm-weights 0.3,0.5,0.8,1.2 --length-bonuses 0,0.5,1.5,3 --jobs 1 --quiet --no-plots \
    > /dev/null 2> "$view/bench.log"
  echo "   $n: $(( SECONDS - t0 )) s"
done

"$py" - "$fed" "${names[@]}" <<'PY'
import json, sys
from pathlib import Path

fed, names = Path(sys.argv[1]), sys.argv[2:]
split, cond, none = "test-clean", "offline/neural/background", "offline/none"
labels = {"public": "public LM (start of all below)", "central": "(a) central fine-tuning, non-private",
          "fedavg": "(b) FedAvgM, no clipping, no noise", "adaptive": "(d) DP-FedAvg, adaptive clip (median)"}
books = json.loads((fed / "eval.json").read_text())["books"]


def per_user(res, name):
    return {u["user"]: u["wer"] for u in res["splits"][split]["per_user"][name]}


results = {n: json.loads((fed / "wer" / n / "out" / "results.json").read_text()) for n in names}
base = results[names[0]]["splits"][split]["summaries"][none]
base_users = per_user(results[names[0]], none)
for n, res in results.items():  # the no-LM decodes do not depend on the LM: all runs must agree
    if per_user(res, none) != base_users:
        sys.exit(f"{fed / 'wer' / n / 'out' / 'results.json'}: expected the same no-LM WERs as the other runs")
users = {n: per_user(res, cond) for n, res in results.items()}


def versus(n, ref):
    if n == ref:
        return ""
    a = sum(users[n].values()) / len(users[n])
    b = sum(users[ref].values()) / len(users[ref])
    better = sum(users[n][u] < users[ref][u] for u in users[n])
    worse = sum(users[n][u] > users[ref][u] for u in users[n])
    return f"{100 * (a / b - 1):+.1f}% ({better}/{worse})"


def pct(x):
    return f"{100 * x:.1f}"


lo, hi = base["ci"]
rows = [f"| LM | LM weight / bonus | {split} avg per-user WER % [95% CI] | vs no LM | vs public LM | vs central "
        "| held-out users ppl | test books ppl (mean) |",
        "|---|---|---|---|---|---|---|---|",
        f"| no LM | – / {base['length_bonus']:g} | {pct(base['avg_user_wer'])} [{pct(lo)}, {pct(hi)}] | | | | | |"]
for n in names:
    res = results[n]["splits"][split]
    summ = res["summaries"][cond]
    comp = next(c for c in res["comparisons"] if c["candidate"] == cond and c["baseline"] == none)
    lo, hi = summ["ci"]
    p = comp["p_value"]
    ptxt = "p<0.001" if p < 0.001 else f"p={p:.3f}"
    vs_none = f"{100 * comp['relative']:+.1f}% ({ptxt}; {comp['improved']}/{comp['worse']})"
    dev_ppl = json.loads((fed / n / "train.json").read_text())["dev_perplexity"]
    ppl = sum(b["perplexity"][n] for b in books) / len(books)
    label = labels.get(n, f"(c) DP-FedAvg, fixed clip {n.removeprefix('fixed-')}")
    rows.append(f"| {label} | {summ['lm_weight']:g} / {summ['length_bonus']:g} | {pct(summ['avg_user_wer'])} "
                f"[{pct(lo)}, {pct(hi)}] | {vs_none} | {versus(n, 'public')} | {versus(n, 'central')} "
                f"| {dev_ppl:.0f} | {ppl:.0f} |")
tune = results[names[0]]["tuning"][results[names[0]]["tune_splits"][split]]
n_users = len(base_users)
text = "\n".join(rows) + (
    f"\n\nEach LM fused alone as the background LM (word-synchronous, float ONNX), non-streaming CTC beam "
    f"search; LM weight and length bonus tuned on the {len(tune['users'])} {tune['split']} users, "
    f"never on the {n_users} {split} users. WER: average of the per-user WERs, 95% CI from "
    f"{comp['resamples']:,} bootstrap resamples of users; vs no LM: relative change with the paired-bootstrap "
    "p-value and users improved/worse; vs public LM / central: relative change of the average and users "
    "better/worse. Perplexities as in table.md (held-out pseudo-users; the test users' books).\n")
(fed / "wer.md").write_text(text, encoding="utf-8")
print(text, end="")
PY
echo "== stage wer done in $(( SECONDS - wer_start )) s; table in $fed/wer.md"
