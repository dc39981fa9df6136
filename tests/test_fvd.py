"""FVD: the Fréchet distance against closed forms, and the I3D call convention with a scripted random network."""

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from t2v_turbo.errors import CheckpointError
from t2v_turbo.evaluation import fvd as F


def random_spd(d, rng):
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    # diagonal covariances: FD = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    a, b = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    for method in ("eigh", "sqrtm"):
        assert F.frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method) == pytest.approx(
            expected, rel=1e-10
        )
    # isotropic: N(mu1, s^2 I) vs N(mu2, t^2 I): |dmu|^2 + d (s - t)^2
    assert F.frechet_distance(mu1, 4 * np.eye(d), mu2, 9 * np.eye(d)) == pytest.approx(
        ((mu1 - mu2) ** 2).sum() + d * 1.0
    )
    # commuting covariances S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T give the same value as the diagonal case
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert F.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # general SPD pair: the eigen-decomposition route equals scipy's sqrtm; FD(x, x) = 0; symmetric
    s1, s2 = random_spd(d, rng), random_spd(d, rng)
    fd = F.frechet_distance(mu1, s1, mu2, s2)
    assert fd == pytest.approx(F.frechet_distance(mu1, s1, mu2, s2, "sqrtm"), rel=1e-8)
    assert fd == pytest.approx(F.frechet_distance(mu2, s2, mu1, s1), rel=1e-9)
    assert F.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 (the 2-Wasserstein distance squared)
    assert F.frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])
    ) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="mismatch"):
        F.frechet_distance(mu1, s1, mu2[:3], s2)


def test_gaussian_stats_and_feature_fd():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 3))
    mu, sigma = F.gaussian_stats(torch.from_numpy(x).float())
    assert mu == pytest.approx(x.mean(0), abs=1e-6)
    assert sigma == pytest.approx(np.cov(x, rowvar=False), abs=1e-6)
    # shifting every feature by c moves only the mean: FD = |c|^2
    c = np.array([1.0, -2.0, 0.5])
    assert F.frechet_distance_from_features(x, x + c) == pytest.approx(float(c @ c), rel=1e-9)
    with pytest.raises(ValueError):
        F.gaussian_stats(np.zeros((1, 3)))


class TinyI3D(nn.Module):
    """A random network with the StyleGAN-V I3D call signature; it checks the documented input contract."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(3, 8, kernel_size=(3, 7, 7), stride=(1, 4, 4))
        self.head = nn.Linear(8, 16)

    def forward(
        self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> Tensor:
        assert x.dim() == 5 and x.shape[1] == 3 and x.shape[3] == 224 and x.shape[4] == 224, "bad shape"
        assert not rescale and not resize and return_features, "bad flags"
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0, "pixels must be in [-1, 1]"
        h = torch.relu(self.conv(x)).mean(dim=(2, 3, 4))
        return self.head(h)


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.script(TinyI3D()).save(str(path))
    return path


def test_fvd_with_scripted_network(detector_path):
    det = F.load_detector(detector_path)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(6, 3, 4, 32, 40, generator=g) * 2 - 1
    fake = (torch.rand(5, 3, 4, 32, 40, generator=g) * 2 - 1) * 0.5
    out = F.fvd(det, real, fake)
    assert out["name"] == "fvd5_4f_32x40"
    assert out["protocol"]["num_real_videos"] == 6 and out["protocol"]["i3d_input"] == 224
    # the value is the Fréchet distance of the network's features on the preprocessed videos
    feats_r = det(F.preprocess_for_i3d(real), rescale=False, resize=False, return_features=True).detach()
    feats_f = det(F.preprocess_for_i3d(fake), rescale=False, resize=False, return_features=True).detach()
    assert out["value"] == pytest.approx(F.frechet_distance_from_features(feats_r, feats_f), rel=1e-6)
    assert out["value"] > 0
    # a set against itself is 0; the frame crop is part of the protocol name
    assert F.fvd(det, real, real)["value"] == pytest.approx(0.0, abs=1e-6)
    assert F.fvd(det, real, fake, num_frames=3)["name"] == "fvd5_3f_32x40"
    with pytest.raises(ValueError, match="frames"):
        F.fvd(det, real, fake, num_frames=9)


def test_preprocess_for_i3d_geometry():
    # a 56 x 112 video with its right half white: short side 56 -> 224 (x4, bilinear), width 448, centre crop
    # keeps resized columns 112..335, so the edge (source column 56 = resized 224) lands at crop column 112
    v = torch.zeros(1, 3, 2, 56, 112)
    v[..., :, 56:] = 1.0
    x = F.preprocess_for_i3d(v)
    assert x.shape == (1, 3, 2, 224, 224)
    assert float(x[0, 0, 0, 100, 0]) == 0.0 and float(x[0, 0, 0, 100, -1]) == 1.0
    # bilinear, align_corners=False: resized column j samples source (j + 0.5) / 4 - 0.5
    assert float(x[0, 0, 0, 100, 109]) == 0.0 and float(x[0, 0, 0, 100, 114]) == 1.0
    assert float(x[0, 0, 0, 100, 111]) == pytest.approx(0.375) and float(
        x[0, 0, 0, 100, 112]
    ) == pytest.approx(0.625)


def test_load_detector_errors(tmp_path):
    with pytest.raises(CheckpointError, match="i3d_torchscript"):
        F.load_detector(tmp_path / "missing.pt")

    class Wrong(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.mean()

    path = tmp_path / "wrong.pt"
    torch.jit.script(Wrong()).save(str(path))
    with pytest.raises(CheckpointError, match="return_features"):
        F.load_detector(path)
