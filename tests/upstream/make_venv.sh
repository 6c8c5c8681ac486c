#!/usr/bin/env bash
# Builds a throwaway virtual environment in which the `image-reward` 1.5 package imports, so that
# tests/test_reward_imagereward.py::test_agrees_with_upstream_imagereward runs instead of skipping.
# Never install these into the project's environment. Usage: tests/upstream/make_venv.sh [VENV_DIR]
set -euo pipefail
venv=${1:-/tmp/imagereward-upstream-venv}
root=$(cd "$(dirname "$0")/../.." && pwd)
python3 -m venv "$venv"
pip=("$venv/bin/pip" install -c "$root/constraints.txt")
# What image-reward 1.5 was written against: transformers 4.x still has the modeling_utils helpers
# and tokenizer attributes it uses. setuptools<81 keeps pkg_resources for fairscale's build.
"${pip[@]}" "setuptools<81" wheel torch==2.13.0 "transformers==4.46.3" "huggingface_hub<1.0" \
    "diffusers<0.33" accelerate datasets pillow numpy tqdm pyyaml packaging safetensors gymnasium tyro pytest
# Its pins, without their dependency trees (torchvision 0.28 is the only build for torch 2.13).
"${pip[@]}" --no-deps image-reward==1.5 timm==0.6.13 torchvision==0.28.0
"${pip[@]}" --no-deps --no-build-isolation fairscale==0.4.13
echo "run: PYTHONPATH=$root/tests/upstream/shims:$root $venv/bin/python -m pytest $root/tests/test_reward_imagereward.py -p no:cacheprovider"
