"""Image quality: pyiqa no-reference scores, and Fréchet distance / KID against real images.

FD and KID are computed in a configurable feature space: Inception-v3 pool features (FID
and KID proper) when a local torchvision ``inception_v3`` state dict is configured, else the
judge's image features, reported as ``fd_judge`` / ``kid_judge`` so nobody mistakes them for
FID. Both are biased at small sample sizes; compare models on the same prompt set only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flywheel.backends import BackendUnavailable


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||² + Tr(S_a + S_b - 2 (S_a S_b)^½) of two (N, D) feature sets."""
    from scipy import linalg

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    sa, sb = np.atleast_2d(sa), np.atleast_2d(sb)
    covmean = linalg.sqrtm(sa @ sb)
    if not np.isfinite(covmean).all():  # singular product: regularise as pytorch-fid does
        eps = np.eye(len(sa)) * 1e-6
        covmean = linalg.sqrtm((sa + eps) @ (sb + eps))
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean.real))


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int = 20, subset_size: int = 100,
                              seed: int = 0) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (Bińkowski et al.), averaged over subsets."""
    n = min(len(a), len(b), subset_size)
    if n < 2:
        return float("nan")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        values.append((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                      - 2 * kxy.mean())
    return float(np.mean(values))


class InceptionFeatures:
    """2048-d pool features of torchvision's inception_v3 from a local state dict."""

    def __init__(self, weights: str | Path | None):
        if not weights or not Path(weights).is_file():
            raise BackendUnavailable(f"no Inception-v3 weights at {weights!r}: FID/KID proper not computed")
        import torch
        from torchvision.models import inception_v3

        self._torch = torch
        self.model = inception_v3(weights=None, aux_logits=True, init_weights=False)
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model.fc = torch.nn.Identity()
        self.model.eval()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        with torch.inference_mode():
            return self.model((x - mean) / std).numpy().astype(np.float64)


def project(generated: np.ndarray, real: np.ndarray, components: int, min_std: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Both sets standardised by the real set's statistics and projected on its top principal
    components: hand-made features differ wildly in scale, and a covariance estimated from
    tens of images is singular in hundreds of dimensions; the components are whitened. The judge's features are shares,
    positions and colours in [0, 1]; ``min_std`` keeps a feature that is nearly constant on real
    images from turning a small difference into an enormous distance."""
    mean, std = real.mean(0), np.maximum(real.std(0), min_std)
    g, r = (generated - mean) / std, (real - mean) / std
    k = min(components, len(real) - 1, r.shape[1])
    _, _, vt = np.linalg.svd(r, full_matrices=False)
    g, r = g @ vt[:k].T, r @ vt[:k].T
    scale = np.maximum(r.std(0), 1e-8)  # whitened: unit variance per component on real images, as KID's kernel expects
    return g / scale, r / scale


def distribution_metrics(generated: np.ndarray, real: np.ndarray, space: str, components: int = 16) -> dict[str, float]:
    """``fid``/``kid`` on Inception features; ``fd_<space>``/``kid_<space>`` on any other space,
    after :func:`project` to ``components`` dimensions."""
    if space == "inception":
        return {"fid": frechet_distance(generated, real), "kid": kernel_inception_distance(generated, real)}
    g, r = project(generated, real, components)
    return {f"fd_{space}": frechet_distance(g, r), f"kid_{space}": kernel_inception_distance(g, r)}


def quality_scores(images: np.ndarray, metrics: list[str], weights: dict[str, Path]) -> tuple[dict[str, float], dict[str, str]]:
    """Mean pyiqa score per metric over ``images``; metrics that cannot run go to the second dict with the reason."""
    from flywheel.filters.quality import QualityScorer

    scores, skipped = {}, {}
    for metric in metrics:
        try:
            scorer = QualityScorer(metric, weights.get(metric))
        except BackendUnavailable as exc:
            skipped[metric] = str(exc)
            continue
        except (KeyError, ValueError, RuntimeError) as exc:  # an unknown metric name or a pyiqa failure: say so
            skipped[metric] = f"{type(exc).__name__}: {exc}"
            continue
        if not len(images):
            skipped[metric] = "no images"
            continue
        scores[metric] = float(np.nanmean([scorer.score(im) for im in images]))
    return scores, skipped
