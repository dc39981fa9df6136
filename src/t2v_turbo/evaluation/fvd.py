"""Fréchet Video Distance with a user-supplied I3D TorchScript network (the StyleGAN-V port).

The network is the one published with StyleGAN-V / "fvd-comparison" as `i3d_torchscript.pt`
(Kinetics-400 I3D; we never download it: pass its path). Expected call, as in those protocols::

    detector = torch.jit.load(path).eval()
    feats = detector(videos, rescale=False, resize=False, return_features=True)   # (B, 400)

with `videos` (B, 3, T, 224, 224) float in [-1, 1]: `rescale=False` because we already map pixels to
[-1, 1], `resize=False` because we already resize (short side -> 224 bilinear, centre crop 224), and
`return_features=True` returns the pre-softmax logits. Any TorchScript (or plain) module with that
call signature works; `load_detector` checks the output on a dummy batch.

The statistic is the Fréchet distance between Gaussians fitted to the two feature sets (mean and
unbiased covariance), computed in float64:

    FD = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

The protocol is part of the metric's name: `fvd{N}_{T}f_{H}x{W}` = N videos per set, T frames per
video, source resolution H x W (e.g. `fvd2048_16f_256x256`), recorded with the rest of the protocol.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import CheckpointError

I3D_SIZE = 224
DETECTOR_KWARGS = {"rescale": False, "resize": False, "return_features": True}


# ------------------------------------------------------------------------------------------ Fréchet distance
def gaussian_stats(features: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), float64."""
    x = np.asarray(features.detach().cpu() if isinstance(features, Tensor) else features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features (N >= 2, D), got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition."""
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, method: str = "eigh") -> float:
    """tr((S_1 S_2)^{1/2}) for covariances S_1, S_2.

    "eigh" (default): S_1 S_2 is similar to the symmetric PSD matrix M = S_1^{1/2} S_2 S_1^{1/2}
    (same eigenvalues), so tr((S_1 S_2)^{1/2}) = sum_i sqrt(lambda_i(M)), all real and >= 0.
    "sqrtm": scipy.linalg.sqrtm(S_1 S_2) and the trace of its real part (the reference FVD code).
    """
    if method == "eigh":
        r = _sqrt_psd(sigma1)
        m = r @ sigma2 @ r
        vals = np.linalg.eigvalsh((m + m.T) / 2)
        return float(np.sqrt(np.clip(vals, 0.0, None)).sum())
    if method == "sqrtm":
        from scipy import linalg

        s = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(s).all():  # singular product: regularise as the FID reference does
            eps = 1e-6 * np.eye(sigma1.shape[0])
            s = linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps))
        return float(np.trace(np.real(s)))
    raise ValueError(f"unknown method {method!r}; valid: ['eigh', 'sqrtm']")


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, method: str = "eigh"
) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2), float64.

    FD = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})  (Dowson & Landau 1982; FID/FVD).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2, method))


def frechet_distance_from_features(feats1, feats2, method: str = "eigh") -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N1, D) and (N2, D)."""
    return frechet_distance(*gaussian_stats(feats1), *gaussian_stats(feats2), method=method)


# ------------------------------------------------------------------------------------------ the I3D network
def load_detector(path: str | Path, device: str | torch.device = "cpu", check: bool = True):
    """`torch.jit.load` the I3D TorchScript file (never unpickles Python objects) and sanity-check it.

    Raises:
        CheckpointError: no file at `path`, not a TorchScript file, or the network does not accept
            the documented call or returns no (B, D) features.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"I3D network not found at {path}: give the StyleGAN-V `i3d_torchscript.pt` (TorchScript)"
        )
    try:
        detector = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path} is not a TorchScript I3D network ({first})") from None
    if check:
        dummy = torch.zeros(1, 3, 16, I3D_SIZE, I3D_SIZE, device=device)
        try:
            with torch.no_grad():
                out = detector(dummy, **DETECTOR_KWARGS)
        except Exception as e:  # TorchScript raises RuntimeError subclasses with long messages
            raise CheckpointError(
                f"{path}: the network must accept detector(videos (B, 3, T, 224, 224) in [-1, 1], "
                f"rescale=False, resize=False, return_features=True): {type(e).__name__}"
            ) from None
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 1:
            raise CheckpointError(f"{path}: expected (B, D) features, got {getattr(out, 'shape', type(out))}")
    return detector


def preprocess_for_i3d(videos: Tensor, num_frames: int | None = None, size: int = I3D_SIZE) -> Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> (B, 3, T', size, size) in [-1, 1] for the detector.

    Keeps the first `num_frames` frames (StyleGAN-V's temporal crop), resizes the short side to `size`
    (bilinear, no antialias, as the reference protocol) and centre-crops.
    """
    if videos.dim() != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected videos (B, 3, T, H, W), got {tuple(videos.shape)}")
    if num_frames is not None:
        if num_frames > videos.shape[2]:
            raise ValueError(f"videos have {videos.shape[2]} frames, the protocol needs {num_frames}")
        videos = videos[:, :, :num_frames]
    b, c, t, h, w = videos.shape
    x = videos.float().permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    scale = size / min(h, w)
    th, tw = max(size, math.ceil(h * scale)), max(size, math.ceil(w * scale))
    if (th, tw) != (h, w):
        x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
    top, left = (th - size) // 2, (tw - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    return x.reshape(b, t, c, size, size).permute(0, 2, 1, 3, 4).clamp(-1, 1).contiguous()


@torch.no_grad()
def i3d_features(
    detector, videos: Tensor | Iterable[Tensor], num_frames: int | None = None, batch_size: int = 16
) -> np.ndarray:
    """Detector features of videos (B, 3, T, H, W) in [-1, 1] (a tensor or an iterable of batches) -> (N, D)."""
    batches = [videos] if isinstance(videos, Tensor) else videos
    device = next(iter(detector.parameters()), torch.empty(0)).device
    out = []
    for batch in batches:
        for i in range(0, batch.shape[0], batch_size):
            x = preprocess_for_i3d(batch[i : i + batch_size], num_frames).to(device)
            out.append(detector(x, **DETECTOR_KWARGS).detach().double().cpu().numpy())
    return np.concatenate(out)


@dataclass
class FVDProtocol:
    """What an FVD number depends on; `name` encodes the headline parts (fvd{N}_{T}f_{H}x{W})."""

    num_videos: int
    num_frames: int
    height: int
    width: int
    i3d_input: int = I3D_SIZE
    resize: str = "short side -> 224 bilinear, centre crop"
    pixel_range: str = "[-1, 1]"
    features: str = "I3D pre-softmax logits (return_features=True)"
    covariance: str = "unbiased (N - 1)"

    @property
    def name(self) -> str:
        return f"fvd{self.num_videos}_{self.num_frames}f_{self.height}x{self.width}"

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}


def fvd(
    detector,
    real: Tensor,
    fake: Tensor,
    num_frames: int | None = None,
    batch_size: int = 16,
    method: str = "eigh",
) -> dict:
    """FVD between real videos (M, 3, T_r, H_r, W_r) and generated ones (N, 3, T, H, W), in [-1, 1].

    Both sets use their first `num_frames` frames (default: the generated T). The name records N, the
    frame count and the generated resolution; the protocol also records M.

    Returns:
        {"name": "fvd{N}_{T}f_{H}x{W}", "value": float, "protocol": {...}}.
    """
    t = num_frames or fake.shape[2]
    proto = FVDProtocol(fake.shape[0], t, fake.shape[3], fake.shape[4])
    value = frechet_distance_from_features(
        i3d_features(detector, real, t, batch_size), i3d_features(detector, fake, t, batch_size), method
    )
    return {
        "name": proto.name,
        "value": value,
        "protocol": proto.to_dict() | {"num_real_videos": real.shape[0]},
    }
