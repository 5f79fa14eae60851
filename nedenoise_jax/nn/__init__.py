"""The method: normalization-equivariant layers, the denoisers built from them, and equivariance checks.

:mod:`.layers` (affine convolutions, SortPool, affine residuals, the mode
table), :mod:`.models` (FDnCNN, DRUNet, DnCNN in four modes; ``create``),
:mod:`.equivariance` (chex checks for any denoising function).
"""
