#!/usr/bin/env bash
# The prepared GPU command of the GPU-speed issue: each part is one call of the device tool, under
# 10 minutes, and leaves two files in the output folder: results.tgz and log.txt.
#
#   part 1: the GPU equivariance check (float32 at "highest" precision, relative errors <= 1e-5),
#           on XLA's path and on the Pallas NE convolution (NEDENOISE_GPU_CONV=pallas,
#           kernels/pallas_conv.py); then FDnCNN and DRUNet, ordinary, norm_equiv and
#           norm_equiv@pallas, float32 at XLA's default precision (TF32 convolutions) and at
#           "highest", at GPU sizes; then a profile of the FDnCNN training step (kernels per mode,
#           optimized HLO).
#   part 2: bfloat16 (the three modes), the authors' PyTorch code on the same GPU (float32 with
#           TF32, and bfloat16 autocast), and a profile of the DRUNet training step.
#
# Before the call, here (ignored by .gitignore, never committed):
#   .whl/  the one package the GPU image lacks:
#          python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#            --implementation cp --platform manylinux2014_x86_64 -d .whl ml_collections==1.1.0
#   .ref/nenn/models/{basicblocks,drunet,fdncnn}.py  the authors' models (AGPL; timed, never copied):
#          from a checkout of github.com/sherbret/normalization_equivariant_nn
# The call (device tool):  run(command="bash benchmarks/gpu.sh 1 $OUT", carry=[".whl", ".ref"],
#                              timeout_s=600)
# Rehearsal on the CPU, tiny models, the same steps:
#   REHEARSE=1 PY=.venv/bin/python bash benchmarks/gpu.sh 1 /tmp/gpu-out
set -uo pipefail
part=${1:?usage: gpu.sh 1|2 OUTDIR}
out=${2:?usage: gpu.sh 1|2 OUTDIR}
PY=${PY:-python3}
work=$(mktemp -d)
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

fused=norm_equiv@pallas
if [ -n "${REHEARSE:-}" ]; then
  fused=norm_equiv@interpret  # the same kernel in Pallas' interpreter
  size=(--tiny --repeats 2)
  tasks=infer64,infer2x32,train
  shapes=fdncnn=4x32,drunet=2x32
  limit=300
else
  size=(--repeats 10)
  tasks=infer512,infer1024,infer8x256,train
  shapes=fdncnn=128x64,drunet=16x128
  limit=240
fi
step() {  # step NAME SECONDS COMMAND...: each step bounded, so the archive is always written
  local name=$1 secs=$2
  shift 2
  echo "=== $name ($(date -u +%H:%M:%S), at most ${secs} s)"
  timeout "$secs" "$@"
  echo "=== $name: exit $?"
}
finish() {
  tar czf "$out/results.tgz" -C "$work" . && echo "=== results.tgz: $(tar tzf "$out/results.tgz" | wc -l) entries"
}
trap finish EXIT

echo "=== part $part on $(hostname), $(date -u +%F)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
$PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
bench=(benchmarks/bench.py --archs fdncnn,drunet --modes "ordinary,norm_equiv,$fused" --tasks "$tasks"
       --train_shapes "$shapes" "${size[@]}")
profile_modes="ordinary,norm_equiv,$fused"
case "$part" in
  1)
    step equivariance 75 $PY benchmarks/equivariance_report.py --quick --check 1e-5 \
      --out "$work/equivariance_gpu.json"
    step equivariance-pallas 75 env NEDENOISE_GPU_CONV="${fused#*@}" $PY benchmarks/equivariance_report.py \
      --quick --check 1e-5 --widths pallas --out "$work/equivariance_gpu_pallas.json"
    step bench-float32 "$limit" $PY "${bench[@]}" --out "$work/bench_gpu_f32"
    step bench-float32-highest 100 $PY "${bench[@]}" --archs fdncnn --precision highest \
      --out "$work/bench_gpu_f32_highest"
    step profile-fdncnn 90 $PY benchmarks/gpu_profile.py --arch fdncnn --task train --modes "$profile_modes" \
      --train_shapes "$shapes" ${REHEARSE:+--tiny} --out "$work/profile"
    ;;
  2)
    step bench-bfloat16 "$limit" $PY "${bench[@]}" --dtype bfloat16 --out "$work/bench_gpu_bf16"
    device=cuda
    [ -n "${REHEARSE:-}" ] && device=cpu
    ref_tasks=$tasks
    [ -n "${REHEARSE:-}" ] && ref_tasks=infer64  # the authors' full-size models on a CPU: inference only
    step reference-tf32 120 $PY benchmarks/bench_reference.py --repo .ref/nenn --device "$device" --tf32 \
      --tasks "$ref_tasks" --train_shapes "$shapes" --repeats 5 --out "$work/reference_gpu_tf32"
    step reference-bf16 120 $PY benchmarks/bench_reference.py --repo .ref/nenn --device "$device" \
      --dtype bfloat16 --tasks "$ref_tasks" --train_shapes "$shapes" --repeats 5 \
      --out "$work/reference_gpu_bf16"
    step profile-drunet 90 $PY benchmarks/gpu_profile.py --arch drunet --task train --modes "$profile_modes" \
      --train_shapes "$shapes" ${REHEARSE:+--tiny} --out "$work/profile"
    ;;
  *) echo "part must be 1 or 2"; exit 2 ;;
esac
