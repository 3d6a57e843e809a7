#!/usr/bin/env bash
# The campaign on a lent GPU machine (the device tool runs this from the repository root; $OUT comes back).
# Needs, git-ignored beside the checkout: .whl/ (open_clip_torch, diffusers, ftfy, wcwidth, importlib_metadata
# wheels for Python 3.12, which that machine lacks) and .devdata/data.tgz (the shared data, tarred).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
tar xzf .devdata/data.tgz -C /tmp
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, open_clip, diffusers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 benchmarks/campaign.py --data /tmp/data --runs runs/campaign --device cuda --install-clip yes \
    --skip clip-resnet-bf16 unet-minsnr-bf16 --pack "$OUT" "$@" 2>&1 | tee "$OUT/campaign.log"
