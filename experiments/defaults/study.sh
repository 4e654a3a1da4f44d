#!/usr/bin/env bash
# Trains every setting of the study on every corpus (experiments/defaults/corpora.py wrote them
# into DATA), one run at a time, then scores each on its test set greedy and with beam 5:
#   RUNS/<corpus>.<setting>/            the workdir
#   RUNS/<corpus>.<setting>.beam{1,5}.json   s2s eval's JSON on the test split
# A run already scored is skipped, so the script resumes where it stopped.
#
#   experiments/defaults/study.sh data/defaults runs/defaults [corpus.setting ...]
set -euo pipefail
DATA=$1 RUNS=$2
shift 2
mkdir -p "$RUNS"

# The settings compared, on top of the model's defaults (a bidirectional GRU encoder, additive
# attention): "today" is 2,000 steps without dropout (the built-in tasks' defaults); "dN" is
# dropout 0.N; "-20ep" is 20 epochs of batches of 64 instead of 2,000 steps.
declare -A SETTINGS=(
  [today]="--set dropout=0 --set steps=2000"
  [d3]="--set dropout=0.3 --set steps=2000"
  [d5]="--set dropout=0.5 --set steps=2000"
  [d3-20ep]="--set dropout=0.3 --set steps=EPOCHS20"
)
RUN_LIST=("$@")
if [ ${#RUN_LIST[@]} -eq 0 ]; then
  RUN_LIST=(m30k-3k.today m30k-3k.d3 g2p-5k.today g2p-5k.d3 m30k-12k.today m30k-12k.d3
            m30k-12k.d3-20ep m30k-3k.d5 g2p-5k.d5 g2p-30k.d3 g2p-30k.d3-20ep)
fi

for name in "${RUN_LIST[@]}"; do
  corpus=${name%%.*} setting=${name#*.}
  [ -f "$RUNS/$name.beam5.json" ] && continue
  pairs=$(wc -l < "$DATA/$corpus/train.tsv")
  settings=${SETTINGS[$setting]//EPOCHS20/$(( (20 * pairs + 63) / 64 ))}
  echo "== $name: $settings" >&2
  # shellcheck disable=SC2086
  s2s train --workdir "$RUNS/$name" --train "$DATA/$corpus/train.tsv" \
    --valid "$DATA/$corpus/valid.tsv" --test "$DATA/$corpus/test.tsv" $settings \
    > "$RUNS/$name.log" 2>&1
  for beam in 1 5; do
    s2s eval --workdir "$RUNS/$name" --split test --beam "$beam" > "$RUNS/$name.beam$beam.json"
  done
done
