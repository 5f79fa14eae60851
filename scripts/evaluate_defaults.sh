#!/usr/bin/env bash
# The results of the shipped-defaults issue, once scripts/ship_defaults.py has shipped them: the
# new defaults (NE and ordinary, range-trained) against the sigma = 25 experiment models, at
# sigma 5 to 100, gray on Set12 and BSD68, colour on CBSD68 and Kodak24; tables, CSV, JSON
# and the PSNR-vs-sigma plots in docs/results/defaults/{gray,color}.
#   bash scripts/evaluate_defaults.sh [DATA] [OUT]      (DATA: ../shared/data)
# On the 2-core CPU about 70 minutes in all (1.2 s per BSD68 image for a full-size FDnCNN).
set -euo pipefail
data=${1:-../shared/data}
out=${2:-docs/results/defaults}
PY=${PY:-python3}
sigmas=5,10,15,25,35,50,75,100
$PY -m nedenoise_jax.evaluate --out "$out/gray" --sigmas "$sigmas" \
  --model pretrained:gray-default --model pretrained:gray-default-ordinary \
  --model pretrained:gray-norm_equiv --model pretrained:gray-ordinary \
  --data "folder:$data/test/set12" --data "folder:$data/test/bsd68"
$PY -m nedenoise_jax.evaluate --out "$out/color" --sigmas "$sigmas" \
  --model pretrained:color-default --model pretrained:color-default-ordinary \
  --model pretrained:color-norm_equiv \
  --data "folder:$data/test/cbsd68" --data "folder:$data/test/kodak24"
