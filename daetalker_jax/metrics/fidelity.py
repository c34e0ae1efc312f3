"""Per-frame fidelity of generated images against the ground truth: PSNR and SSIM on uint8 RGB."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PEAK = 255.0
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # an 11x11 window, as in Wang et al. 2004
SSIM_C1 = (0.01 * PEAK) ** 2
SSIM_C2 = (0.03 * PEAK) ** 2


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB (peak 255) of uint8 images or batches; one value from the MSE over every element,
    not a mean of per-image PSNRs. inf when identical."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(PEAK**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) of uint8 images (H, W, 3) or batches (N, H, W, 3).

    Convention (matches skimage's `gaussian_weights=True, use_sample_covariance=False, data_range=255`):
    local statistics use a Gaussian window (sigma 1.5, truncated to 11x11) per channel, in float64;
    the SSIM map is averaged over the pixels whose window lies wholly inside the image (a 5-pixel border
    is dropped), then over channels and images. Identical inputs give exactly 1.0.
    """
    if a.shape != b.shape:
        raise ValueError(f"ssim needs equal shapes, got {a.shape} and {b.shape}")
    if min(a.shape[-3:-1]) <= 2 * SSIM_RADIUS:
        raise ValueError(f"ssim needs frames larger than {2 * SSIM_RADIUS + 1}x{2 * SSIM_RADIUS + 1}, got {a.shape}")
    x, y = a.astype(np.float64), b.astype(np.float64)
    sigma = [0.0] * x.ndim
    sigma[-3] = sigma[-2] = SSIM_SIGMA  # blur rows and columns only: channels and images stay separate

    def blur(v: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(v, sigma, truncate=SSIM_RADIUS / SSIM_SIGMA)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
                / ((mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (var_x + var_y + SSIM_C2)))
    r = SSIM_RADIUS
    return float(ssim_map[..., r:-r, r:-r, :].mean())
