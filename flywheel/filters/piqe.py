"""PIQE (Venkatanath et al., NCC 2015) in NumPy and OpenCV: pyiqa's PIQE, step for step, without torch.

pyiqa's implementation runs on torch tensors and also builds three full-size masks the
filter chain never reads; this one computes the score alone, from per-block sums, at
several times the speed on one core. It works in double precision, as MATLAB's PIQE
does: pyiqa's float32 leaves rounding noise where the local variance is the difference
of two large, nearly equal sums (flat regions), which moves its scores by up to about
0.5 (of 100) from the double-precision value. tests/test_filter.py compares the two.

Details kept from pyiqa on purpose, since they define the numbers: the image is padded
symmetrically by (size mod 16) rather than to a multiple of 16, only whole 16x16 blocks
count, and the "surround" of a block's two centre columns (7 and 8, 0-based) leaves out
columns 7 and 9.
"""

from __future__ import annotations

import cv2
import numpy as np

BLOCK = 16
ACTIVITY_THRESHOLD = 0.1  # block variance above which a block is spatially active
IMPAIRED_THRESHOLD = 0.1  # edge-segment standard deviation below which a segment is flat (an artifact)
WINDOW = 6  # edge segment length
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # YIQ's Y


def _gauss_1d(size: int = 7, sigma: float = 7.0 / 6) -> np.ndarray:
    """The separable factor of MATLAB's fspecial('gaussian', 7, 7/6) (no tap falls below its eps cut)."""
    r = (size - 1) / 2.0
    g = np.exp(-(np.arange(-r, r + 1) ** 2) / (2.0 * sigma * sigma))
    return g / g.sum()


_KERNEL = _gauss_1d()
_EPS = float(np.finfo(np.float32).eps)  # pyiqa's safe_sqrt


def _windowed_var(x: np.ndarray, n: int) -> np.ndarray:
    """Unbiased variance of every run of ``n`` consecutive values along the last axis."""
    c1 = np.cumsum(x, axis=-1)
    c2 = np.cumsum(x * x, axis=-1)
    pad = np.zeros(x.shape[:-1] + (1,))
    c1, c2 = np.concatenate([pad, c1], axis=-1), np.concatenate([pad, c2], axis=-1)
    s1, s2 = c1[..., n:] - c1[..., :-n], c2[..., n:] - c2[..., :-n]
    return (s2 - s1 * s1 / n) / (n - 1)


def piqe(image: np.ndarray) -> float:
    """PIQE score (0 best .. 100 worst) of an RGB uint8 image at least 16 pixels on each side."""
    with np.errstate(divide="ignore", invalid="ignore"):
        y = image.astype(np.float32) @ (_LUMA / np.float32(255))
        y = np.round(255 * (y / y.max())).astype(np.float64)  # 0..255, the brightest pixel at 255
        h, w = y.shape
        if h % BLOCK or w % BLOCK:  # symmetric padding (the edge pixel repeated), as pyiqa's symm_pad
            y = cv2.copyMakeBorder(y, 0, h % BLOCK, 0, w % BLOCK, cv2.BORDER_REFLECT)
        mu = cv2.sepFilter2D(y, cv2.CV_64F, _KERNEL, _KERNEL, borderType=cv2.BORDER_REPLICATE)
        m2 = cv2.sepFilter2D(y * y, cv2.CV_64F, _KERNEL, _KERNEL, borderType=cv2.BORDER_REPLICATE)
        sigma = m2 - mu * mu  # (in place: these full-size passes are most of the time)
        np.abs(sigma, out=sigma)
        sigma += _EPS
        np.sqrt(sigma, out=sigma)
        sigma += 1
        norm = y - mu
        norm /= sigma  # mean-subtracted, contrast-normalised
        rows, cols = norm.shape[0] // BLOCK, norm.shape[1] // BLOCK
        b = norm[:rows * BLOCK, :cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK)  # b[i, y, j, x]: block (i, j)
        col_sum = b.sum(axis=1)  # (rows, cols, 16): each block's column sums
        col_sq = (b * b).sum(axis=1)

        def var(s, q, n):
            return (q - s * s / n) / (n - 1)

        total, total_sq = col_sum.sum(-1), col_sq.sum(-1)
        block_var = var(total, total_sq, BLOCK * BLOCK)
        active = block_var > ACTIVITY_THRESHOLD
        # Gaussian noise: the centre columns' deviation against the surround's, relative to the block's
        centre = np.sqrt(var(col_sum[..., 7] + col_sum[..., 8], col_sq[..., 7] + col_sq[..., 8], 2 * BLOCK))
        surround = np.sqrt(var(total - col_sum[..., 7] - col_sum[..., 9], total_sq - col_sq[..., 7] - col_sq[..., 9],
                               (BLOCK - 2) * BLOCK))
        csd = np.nan_to_num(centre / surround)
        block_sigma = np.sqrt(block_var)
        beta = np.abs(block_sigma - csd) / np.maximum(block_sigma, csd)
        noise = block_sigma > 2 * beta
        # noticeable artifacts: a flat 6-pixel segment on any of the block's four edges
        edges = np.stack([b[:, 0], b[:, -1], b[..., 0].swapaxes(1, 2), b[..., -1].swapaxes(1, 2)], axis=2)
        impaired = (_windowed_var(edges, WINDOW) < IMPAIRED_THRESHOLD ** 2).any(axis=(2, 3))
        scores = active * impaired * (1 - block_var) + active * noise * block_var
        return float((scores.sum() + 1) / (1 + active.sum()) * 100)
