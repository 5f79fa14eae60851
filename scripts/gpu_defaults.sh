#!/usr/bin/env bash
# The prepared GPU command of the shipped-defaults issue: one call of the device tool (under 10
# minutes) trains the four default denoisers (gray and colour FDnCNN, norm_equiv and ordinary,
# nedenoise_jax/configs/defaults.py) together on the GPU and leaves in OUTDIR: NAME.tgz for each
# run (weights file, latest checkpoint with its optimizer state, config, metrics, log),
# summary.json and log.txt (6 files, each under 16 MB).
#
# Before the call, here (ignored by .gitignore, never committed):
#   .whl/   the packages the GPU image lacks (Python 3.12 wheels; the device README says how):
#           ml_collections==1.1.0 grain==0.2.18 array-record==0.8.6 portpicker==1.6.0
#           tensorboardX==2.6.5
#   .data/  the training and validation images (43 MB of the 64 MB a call may carry):
#           bash scripts/gpu_defaults.sh prepare ../shared/data
# The call (device tool):
#   run(command="bash scripts/gpu_defaults.sh train $OUT", carry=[".whl", ".data"], timeout_s=600)
# A run the deadline cut short: copy its NAME.tgz into .resume/ and call again with the archive
# and only the data it needs (each call carries at most 64 MB: 15 of the checkout, 4 of wheels,
# 10 per archive; the gray data 9, the colour data 34), e.g. the two gray runs:
#   run(command="MODELS=gray-default,gray-default-ordinary bash scripts/gpu_defaults.sh train $OUT .resume",
#       carry=[".whl", ".data/train/bsd400", ".data/test/set12", ".resume"], timeout_s=600)
#   and a colour run, one per call: MODELS=color-default, carry .data/train/cbsd432, .data/test/cbsd68.
# Rehearsal on the CPU, a few steps of the same runs:
#   REHEARSE=1 PY=.venv/bin/python bash scripts/gpu_defaults.sh train /tmp/defaults-out
set -uo pipefail
what=${1:?usage: gpu_defaults.sh prepare DATA | train OUTDIR [RESUME_DIR]}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$what" = prepare ]; then
  src=${2:?usage: gpu_defaults.sh prepare DATA}
  rm -rf .data && mkdir -p .data/train .data/test/cbsd68
  cp -r "$src/train/bsd400" "$src/train/cbsd432" .data/train/ && cp -r "$src/test/set12" .data/test/ || exit 1
  # validation uses the first 12 images of CBSD68 (config data.val_max_images), in the reader's order
  $PY -c "
import shutil, sys
from nedenoise_jax.data.sources import list_folder
for f in list_folder(sys.argv[1])[:12]:
  shutil.copy(f, '.data/test/cbsd68/')" "$src/test/cbsd68" || exit 1
  du -sh .data
  exit 0
fi

out=${2:?usage: gpu_defaults.sh train OUTDIR [RESUME_DIR]}
resume=${3:-}
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
if ls .whl/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
echo "=== defaults on $(hostname), $(date -u '+%F %T')"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
$PY -c "import jax, flax, optax, grain, orbax.checkpoint; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__)"

args=(--data .data --out "$out" --work /tmp/defaults-work ${resume:+--resume "$resume"}
      --models "${MODELS:-gray-default,gray-default-ordinary,color-default,color-default-ordinary}")
if [ -n "${REHEARSE:-}" ]; then
  # the same full-size models and steps of the pipeline, a few of them: steps 1-8 of a 12-step
  # schedule, cut by --stop_after as the deadline would cut them
  args+=(--deadline 600 --stop_after 8 --set train.steps=12 --set train.batch_size=4
         --set train.warmup_steps=2 --set checkpoint.every_steps=4 --set data.val_max_images=2)
  [ -d .data ] || args[1]=""
else
  # the runs stop 470 s after this script started (the wheels and checks took $SECONDS), which
  # leaves the 45 s grace, the last packing and the copy back inside the call's 600 s
  args+=(--deadline "$(( ${DEADLINE:-470} - SECONDS ))")
fi
$PY scripts/train_defaults.py "${args[@]}"
rc=$?
echo "=== exit $rc ($(date -u +%T), ${SECONDS} s); brought back: $(ls "$out" | tr '\n' ' ')"
exit $rc
