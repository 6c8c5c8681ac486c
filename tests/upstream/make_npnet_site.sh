#!/usr/bin/env bash
# Puts timm, torchvision and einops (without their dependency trees) in a folder of their own, so
# that tests/test_npnet_reference.py::test_agrees_with_the_reference_npnet runs against timm's real
# Swin-T instead of skipping. Never install these into the project's environment: timm pulls
# torchvision, whose only build for torch 2.13 is a CUDA one that breaks imports on a CPU machine.
# Usage: tests/upstream/make_npnet_site.sh [SITE_DIR], then run the line it prints.
set -euo pipefail
site=${1:-/tmp/npnet-upstream-site}
root=$(cd "$(dirname "$0")/../.." && pwd)
pip install -q --target "$site" --no-deps -c "$root/constraints.txt" timm==1.0.31 torchvision==0.28.0 einops==0.8.2
echo "run: PYTHONPATH=$site:$root/tests/upstream/shims python -m pytest $root/tests/test_npnet_reference.py -p no:cacheprovider"
