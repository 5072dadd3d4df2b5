"""The exact sampler against the model density: chi-square on cells and KS on marginals."""

import numpy as np
import pytest
import torch
from scipy import stats

from ebmfit import Box, EnergyModel
from ebmfit.energies import MLPEnergy, QuadraticEnergy, SplineEnergy
from ebmfit.energies.base import tensor_grid
from ebmfit.partition import gauss_legendre_1d
from ebmfit.samplers.exact import build_envelope, log_partition_from_envelope, sample_exact


def _cell_probs(e, bins):
    """Exact cell probabilities on a bins×bins grid by fine Gauss–Legendre quadrature."""
    x, w = gauss_legendre_1d(bins * 16, 4)
    U = tensor_grid([x, x])
    with torch.no_grad():
        f = torch.exp(-e(U.to(e.param_dtype())).double()) * (w[:, None] * w[None, :]).reshape(-1)
    idx = (U * bins).floor().clamp(max=bins - 1).long()
    cells = torch.zeros(bins, bins, dtype=torch.float64).index_put_(
        (idx[:, 0], idx[:, 1]), f, accumulate=True
    )
    return (cells / cells.sum()).numpy()


def _energies():
    torch.manual_seed(0)
    mlp = MLPEnergy(2, hidden=(32, 32), n_fourier=16)
    with torch.no_grad():
        mlp.net[-1].weight.mul_(30)
    sp = SplineEnergy(2, 10)
    with torch.no_grad():
        sp.coef.copy_(3 * torch.randn_like(sp.coef))
    q = QuadraticEnergy(2, mean=[0.05, 0.9], precision=[[200.0, 50.0], [50.0, 100.0]])
    return {"mlp": mlp, "spline": sp, "quadratic": q}


@pytest.mark.parametrize("name", ["mlp", "spline", "quadratic"])
def test_exact_samples_match_the_model_density(name):
    e = _energies()[name]
    bins = 8
    p = _cell_probs(e, bins)
    n = 40_000
    u, info = sample_exact(e, n, generator=torch.Generator().manual_seed(3))
    assert u.shape == (n, 2) and torch.all((u >= 0) & (u <= 1))
    assert 0 < info.acceptance_rate <= 1
    counts = np.histogram2d(u[:, 0].numpy(), u[:, 1].numpy(), bins=bins, range=[[0, 1], [0, 1]])[0]
    expected = n * p
    keep = expected > 5
    chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    pval = stats.chi2.sf(chi2, keep.sum() - 1)
    assert pval > 1e-3, (chi2, keep.sum())


def test_marginal_ks_against_closed_form_truncated_gaussian():
    e = QuadraticEnergy(2, mean=[0.3, 0.6], precision=np.diag([1 / 0.1**2, 1 / 0.2**2]))
    model = EnergyModel(e, Box([0.0, 0.0], [1.0, 1.0]))
    S = model.sample(5000, generator=torch.Generator().manual_seed(0))
    for i, (m, s) in enumerate([(0.3, 0.1), (0.6, 0.2)]):
        dist = stats.truncnorm((0 - m) / s, (1 - m) / s, loc=m, scale=s)
        assert stats.kstest(S[:, i], dist.cdf).pvalue > 1e-3


def test_envelope_mass_is_an_upper_bound_on_z_and_single_box_rejection_works():
    e = _energies()["spline"]
    env = build_envelope(e)
    x, w = gauss_legendre_1d(128, 4)
    with torch.no_grad():
        logz = torch.logsumexp(
            torch.log((w[:, None] * w[None, :]).reshape(-1)) - e(tensor_grid([x, x])), 0
        )
    assert log_partition_from_envelope(env) >= float(logz)
    one = build_envelope(e, cells=1, max_rounds=0)  # plain rejection from the uniform base
    assert one.lo.shape[0] == 1
    u, info = sample_exact(e, 2000, envelope=one, generator=torch.Generator().manual_seed(0))
    assert u.shape == (2000, 2) and info.n_boxes == 1


def test_exact_sampler_is_reproducible():
    e = _energies()["quadratic"]
    a, _ = sample_exact(e, 100, generator=torch.Generator().manual_seed(5))
    b, _ = sample_exact(e, 100, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
