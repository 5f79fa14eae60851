#!/bin/bash
# NN3D around the shipped NE gray model: CNN vs CNN + 1-3 nonlocal iterations, on Set12, the
# first 12 BSD68 images and 12 rendered documents (self-similar: repeated glyphs).
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-docs/results/nn3d}
nedenoise evaluate --model ne=pretrained:gray-norm_equiv \
  --nn3d 1,2,3 --data folder:$DATA/test/set12 --data folder:$DATA/test/bsd68 --data builtin:text-val \
  --max_images 12 --sigmas 15,25,50 --out "$OUT" --no_progress
python benchmarks/nn3d.py --out benchmarks/results/nn3d.json
