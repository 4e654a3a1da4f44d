#!/usr/bin/env bash
# An ensemble of attention seeds in one command: trains `attention.toml` (dropout 0.3,
# the validation's choice) with seeds 0 .. N-1, then reports each seed alone and the ensembles of
# the first 2 .. N seeds, every one chosen on the validation words (experiments/g2p/README.md):
#
#   experiments/g2p/seeds.sh DATA RUNS N [--set KEY=VALUE ...]
#
# DATA: the folder cmudict_split.py wrote (train.tsv, valid.tsv, test.tsv); RUNS: where the
# workdirs go (RUNS/g2p-attention-seedK). Extra arguments go to every `s2s train`, e.g. `--smoke`
# for a tiny trial. Run it again after an interruption: finished runs are kept, an interrupted
# one resumes exactly. Lengths are padded in multiples of 2 (~20% faster than 8 on G2P words).
# Results: RUNS/report/*.json and its plots (experiments/g2p/results/ holds the committed ones),
# the hypotheses in RUNS/hyps for experiments/paired_test.py.
#
# JOBS=K trains K seeds at a time (default 1), each logging to RUNS/g2p-attention-seedN.log. On
# one H200, three side by side took 5.3-5.5 min each, 2.3 min of it compiling (the processes
# share the host's cores for that): little gain over one at a time, whose step leaves the device
# mostly idle too. Set XLA_PYTHON_CLIENT_PREALLOCATE=false with JOBS, or the first process takes
# 75% of the device's memory.
set -euo pipefail
if [ $# -lt 3 ] || [ ! -f "$1/train.tsv" ] || ! [ "$3" -ge 1 ] 2>/dev/null; then
  echo "usage: $0 DATA RUNS N [s2s train options]; DATA holds train.tsv, valid.tsv, test.tsv" \
       "(python experiments/g2p/cmudict_split.py --data DIR --out DATA), N >= 1" >&2
  exit 2
fi
mkdir -p "$2"
data=$(cd "$1" && pwd) runs=$(cd "$2" && pwd) n=$3  # absolute: the script moves to the project
shift 3
cd "$(dirname "$0")/../.."

train_seed() {  # SEED [s2s train options]
  local seed=$1
  shift
  s2s train --config experiments/g2p/attention.toml --workdir "$runs/g2p-attention-seed$seed" \
    --set dropout=0.3 --set seed="$seed" --set buckets=16 --set bucket_multiple=2 \
    --train "$data/train.tsv" --valid "$data/valid.tsv" --test "$data/test.tsv" \
    --no-progress "$@"
}

jobs=${JOBS:-1}
if [ "$jobs" -le 1 ]; then
  for ((seed = 0; seed < n; seed++)); do
    train_seed "$seed" "$@"
  done
else
  pids=()
  for ((seed = 0; seed < n; seed++)); do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
      sleep 2  # not `wait -n`: it would reap a seed whose status is read below
    done
    train_seed "$seed" "$@" >"$runs/g2p-attention-seed$seed.log" 2>&1 &
    pids+=($!)
  done
  failed=0
  for seed in "${!pids[@]}"; do
    if ! wait "${pids[$seed]}"; then
      echo "seed $seed failed: $runs/g2p-attention-seed$seed.log" >&2
      failed=1
    fi
  done
  [ "$failed" -eq 0 ] || exit 1
fi

models=() members=""
for ((seed = 0; seed < n; seed++)); do
  workdir="$runs/g2p-attention-seed$seed"
  models+=("attention-seed$seed=$workdir")
  members="${members:+$members,}$workdir"
  if [ "$seed" -ge 1 ]; then
    models+=("attention-seeds0-$seed=$members")
  fi
done
python3 experiments/g2p/report.py --test "$data/test.tsv" --valid "$data/valid.tsv" \
  --average 5 --out "$runs/report" --hyps "$runs/hyps" "${models[@]}"
