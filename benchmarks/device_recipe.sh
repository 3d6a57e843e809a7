#!/usr/bin/env bash
# train-default on a lent GPU machine in one device call (the device tool runs this from the repository root; what
# is under $OUT comes back): every stage of the shipped recipe with --device cuda, stopped cleanly at the deadline
# (SIGTERM: the stage in progress saves its step, and train-default stops there), then packed into <= 15 MB parts.
# Called again on the same warm machine it goes on where it stopped: runs/recipe stays there between calls.
#
#   DEADLINE_S=480 bash benchmarks/device_recipe.sh [train-default flags]
#
# Needs, git-ignored beside the checkout and named in the call's carry (as benchmarks/device_campaign.sh): .whl/
# (open_clip_torch, diffusers, ftfy, wcwidth, importlib_metadata wheels, which that machine lacks) and
# .devdata/data.tgz (the shared data, tarred as data/...). A call carries at most 64 MiB (67.1 MB) with the tracked
# tree, which is ~72.7 MB itself since the fast mode's student (checkpoints: CLIP 32.7, U-Net 16.9, fast 8.5, atlas
# 8.2 MB): before a call, `rm -r checkpoints/fast checkpoints/atlas` (no stage reads them; `git checkout` them after),
# and carry the data exported small (the 61 MB of shared data do not fit beside the weights).
#
# Back here, unpack the parts (cat recipe.tgz.part-* | tar xzf - -C runs/recipe) and run
#   python -m clipdiff train-default --runs runs/recipe --checkpoints runs/recipe/checkpoints
# which skips every recorded stage (their records say the GPU trained them), builds the atlas on this CPU (umap is
# not among the machine's wheels) and writes the model card.
set -uo pipefail
DEADLINE_S=${DEADLINE_S:-480}
DEVICE=${DEVICE:-cuda}          # cpu: a dry rehearsal of this script where there is no GPU
DATA=${DATA:-/tmp/data}
OUT=${OUT:?the folder whose files come back}
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
[ -d "$DATA" ] || tar xzf .devdata/data.tgz -C "$(dirname "$DATA")"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PYTHON=${PYTHON:-python3}
# The shipped records go first, so the card's "previous" figures are the models these replace.
mkdir -p runs/recipe/checkpoints
cp -n checkpoints/stages.json runs/recipe/checkpoints/ 2>/dev/null
timeout -s TERM -k 60 "$DEADLINE_S" "$PYTHON" -m clipdiff train-default --device "$DEVICE" --data "$DATA" \
    --runs runs/recipe --checkpoints runs/recipe/checkpoints --assets runs/recipe/assets --atlas no "$@" \
    > "$OUT/train-default.log" 2>&1
echo "train-default: exit $? after at most ${DEADLINE_S} s" | tee -a "$OUT/train-default.log"
tail -n 30 "$OUT/train-default.log"
# What this checkout needs to finish (the atlas, the card): the installed models, their records and card, and each
# stage's record and curves. The run folders' weights and optimizer states stay on the machine for a next call.
(cd runs/recipe && tar czf - checkpoints assets */stage.json */loss.csv */loss.png */samples 2>/dev/null) \
    | split -b 15m - "$OUT/recipe.tgz.part-"
ls -l "$OUT"
