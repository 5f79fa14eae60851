"""The method: normalization-equivariant layers, the denoisers built from them, and equivariance checks.

:mod:`.layers` (affine convolutions, SortPool, affine residuals, the mode
table), :mod:`.models` (FDnCNN, DRUNet, DnCNN, FFDNet, CBDNet in four modes;
``create``), :mod:`.nonlocal_filter` (NN3D: guided nonlocal means around any
denoiser), :mod:`.equivariance` (chex checks for any denoising function).
"""
