"""The seed's gradient identity, ∇L = E_data[∇V] − E_model[∇V], for every energy family.

L(θ) = mean_i V(x_i) + log Σ_g w_g e^{−V(u_g)} is the exact NLL under a quadrature rule; its
autograd gradient is compared with the identity's right-hand side assembled from per-point
Jacobians (torch.func), a computation that shares no code with the surrogate used in training.
"""

import pytest
import torch
from torch.func import functional_call, jacrev

from ebmfit.energies import CosineEnergy, LegendreEnergy, MLPEnergy, QuadraticEnergy, SplineEnergy
from ebmfit.energies.base import tensor_grid
from ebmfit.partition import gauss_legendre_1d
from ebmfit.training.negatives import ShiftedGridNegatives

FAMILIES = {
    "spline": lambda: SplineEnergy(2, 8),
    "legendre": lambda: LegendreEnergy(2, 6),
    "cosine": lambda: CosineEnergy(2, 6),
    "mlp": lambda: MLPEnergy(2, hidden=(32, 32), n_fourier=8, dtype=torch.float64),
    "quadratic": lambda: QuadraticEnergy(2),
}


def _flat(grads: dict) -> torch.Tensor:
    return torch.cat(
        [g.reshape(g.shape[0], -1) if g.dim() > 1 else g[:, None] for g in grads.values()], 1
    )


@pytest.mark.parametrize("name", list(FAMILIES))
def test_gradient_identity_with_quadrature_weights(name):
    torch.manual_seed(0)
    e = FAMILIES[name]()
    with torch.no_grad():
        for p in e.parameters():
            p.add_(0.3 * torch.randn_like(p))
    X = torch.rand(200, 2, dtype=torch.float64) ** 2  # "data"
    ax, w = gauss_legendre_1d(12, 3)
    U = tensor_grid([ax, ax])
    logw = (torch.log(w)[:, None] + torch.log(w)[None, :]).reshape(-1)

    # left side: autograd of the exact NLL
    e.zero_grad()
    L = e(X).mean() + torch.logsumexp(logw - e(U), 0)
    L.backward()
    lhs = torch.cat([p.grad.reshape(-1) for p in e.parameters()])

    # right side: per-point Jacobians of V, averaged with data / model weights
    params = {k: v.detach() for k, v in e.named_parameters()}

    def V(p, x):
        return functional_call(e, p, (x[None],))[0]

    jac = jacrev(V)
    per_point = torch.func.vmap(jac, in_dims=(None, 0))
    J_data = _flat(per_point(params, X))
    J_grid = _flat(per_point(params, U))
    with torch.no_grad():
        pi = torch.softmax(logw - e(U), 0)
    rhs = J_data.mean(0) - (pi[:, None] * J_grid).sum(0)
    # parameters that are masked out (linear energies) have zero gradient on both sides
    assert torch.allclose(lhs, rhs, rtol=1e-5, atol=1e-10 * rhs.abs().max())
    assert (lhs - rhs).norm() <= 1e-5 * rhs.norm()


def test_shifted_grid_is_an_unbiased_estimate_of_z():
    """E_shift[Σ w e^{-V}] = Z: averaged over many shifts it matches fine quadrature within 4 SE."""
    e = QuadraticEnergy(2, mean=[0.2, 0.7], precision=[[80.0, 20.0], [20.0, 60.0]])
    neg = ShiftedGridNegatives(2, points_per_axis=6)
    g = torch.Generator().manual_seed(1)
    zs = []
    with torch.no_grad():
        for _ in range(400):
            nb = neg(e, g)
            zs.append(torch.exp(torch.logsumexp(nb.log_weights - e(nb.points), 0)))
    zs = torch.stack(zs)
    ax, w = gauss_legendre_1d(64, 4)
    U = tensor_grid([ax, ax])
    with torch.no_grad():
        z_true = ((w[:, None] * w[None, :]).reshape(-1) * torch.exp(-e(U))).sum()
    se = zs.std() / len(zs) ** 0.5
    assert abs(zs.mean() - z_true) < 4 * se
