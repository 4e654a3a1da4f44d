#!/usr/bin/env bash
# Issue 13's ensemble of attention seeds in one command: trains `attention.toml` (dropout 0.3,
# the validation's choice) with seeds 0 .. N-1, then reports each seed alone and the ensembles of
# the first 2 .. N seeds, every one chosen on the validation words (experiments/g2p.md):
#
#   experiments/g2p_seeds.sh DATA RUNS N [--set KEY=VALUE ...]
#
# DATA: the folder g2p_cmudict.py wrote (train.tsv, valid.tsv, test.tsv); RUNS: where the
# workdirs go (RUNS/g2p-attention-seedK). Extra arguments go to every `s2s train`, e.g. `--smoke`
# for a tiny trial. Run it again after an interruption: finished runs are kept, an interrupted
# one resumes exactly. Lengths are padded in multiples of 2 (~20% faster than 8 on G2P words).
# Results: RUNS/report/*.json and its plots (experiments/results/g2p/ holds the committed ones),
# the hypotheses in RUNS/hyps for experiments/paired_test.py.
set -euo pipefail
if [ $# -lt 3 ] || [ ! -f "$1/train.tsv" ] || ! [ "$3" -ge 1 ] 2>/dev/null; then
  echo "usage: $0 DATA RUNS N [s2s train options]; DATA holds train.tsv, valid.tsv, test.tsv" \
       "(python experiments/g2p_cmudict.py --data DIR --out DATA), N >= 1" >&2
  exit 2
fi
mkdir -p "$2"
data=$(cd "$1" && pwd) runs=$(cd "$2" && pwd) n=$3  # absolute: the script moves to the project
shift 3
cd "$(dirname "$0")/.."

models=() members=""
for ((seed = 0; seed < n; seed++)); do
  workdir="$runs/g2p-attention-seed$seed"
  s2s train --config experiments/g2p/attention.toml --workdir "$workdir" \
    --set dropout=0.3 --set seed="$seed" --set buckets=16 --set bucket_multiple=2 \
    --train "$data/train.tsv" --valid "$data/valid.tsv" --test "$data/test.tsv" \
    --no-progress "$@"
  models+=("attention-seed$seed=$workdir")
  members="${members:+$members,}$workdir"
  if [ "$seed" -ge 1 ]; then
    models+=("attention-seeds0-$seed=$members")
  fi
done
python3 experiments/g2p_report.py --test "$data/test.tsv" --valid "$data/valid.tsv" \
  --average 5 --out "$runs/report" --hyps "$runs/hyps" "${models[@]}"
