r"""Energy gradients and the reflected leapfrog integrator on the unit cube.

Phase space is :math:`\Omega = [0,1]^d \times \mathbb{R}^d` with Hamiltonian

.. math:: H(u, p) = V(u) + \tfrac12 p^\top M^{-1} p, \qquad M^{-1} = \mathrm{diag}(m),

so that :math:`e^{-H}` has :math:`u`-marginal :math:`e^{-V(u)}` on the cube and
:math:`p \mid u \sim \mathcal N(0, M)`.

**Reflected drift.** Let :math:`r(x) = 1 - |(x \bmod 2) - 1|` be the period-2 mirror map
(:func:`ebmfit.domain.reflect_unit`) and :math:`\sigma(x) = r'(x) \in \{\pm 1\}` its slope
(:math:`+1` iff :math:`x \bmod 2 < 1`).  The drift for time :math:`\varepsilon` is, coordinate-wise,

.. math:: D_\varepsilon(u, p) = \bigl(r(x),\ \sigma(x)\, p\bigr), \qquad x = u + \varepsilon m p,

i.e. free flight with elastic reflection at the faces (position mirrored, momentum component
negated once per face crossing).  Two facts make it a valid leapfrog ingredient:

* *Volume preservation.* On each piece where the number of crossings is constant,
  :math:`D_\varepsilon` is affine,
  :math:`(u, p) \mapsto (\sigma u + \sigma\varepsilon m p + c,\ \sigma p)` with
  :math:`c \in 2\mathbb Z`, whose Jacobian
  :math:`\begin{pmatrix}\sigma & \sigma\varepsilon m \\ 0 & \sigma\end{pmatrix}` has determinant
  :math:`\sigma^2 = 1`; the piece boundaries are null sets.
* *Reversibility.* With :math:`F(u, p) = (u, -p)`,
  :math:`F D_\varepsilon F D_\varepsilon = \mathrm{id}`.  Indeed :math:`r(x) = \sigma x + c`
  with :math:`c \in 2\mathbb Z`, so the return flight starts at
  :math:`\tilde x = r(x) - \varepsilon m \sigma p = \sigma u + c`; since :math:`r` is even and
  2-periodic, :math:`r(\tilde x) = r(u) = u`, and since :math:`r'` is odd,
  :math:`\sigma(\tilde x) = \sigma\, r'(u) = \sigma`, so the momentum returns to
  :math:`\sigma \cdot (-\sigma p) = -p`.

The kicks :math:`K_t(u, p) = (u, p - t \nabla V(u))` are shears (determinant 1) with
:math:`F K_t F = K_t^{-1}`, so one leapfrog step
:math:`K_{\varepsilon/2} D_\varepsilon K_{\varepsilon/2}` and any number :math:`L` of them are
volume-preserving and reversible.  The gradient is only ever
evaluated at points of the cube: :math:`V` needs no extension beyond the faces.

**Cost.** :math:`L` steps use :math:`L + 1` gradients: the first is the cached gradient of the
start point (:attr:`State.grad`), inner half-kicks are fused into full kicks, and the last
gradient is returned so the next transition starts from it.  A transition therefore calls the
energy exactly :math:`L` times.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "EnergyFn",
    "energy_and_grad",
    "kinetic_energy",
    "reflect",
    "reflected_leapfrog",
    "sample_momentum",
]

EnergyFn = Callable[[torch.Tensor], torch.Tensor]
StepSize = float | torch.Tensor


def energy_and_grad(
    energy_fn: EnergyFn, position: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Evaluate :math:`V(u)` and :math:`\nabla_u V(u)` for a batch of points.

    Chains are assumed independent (row ``i`` of the energy depends only on row ``i`` of the
    input), so :math:`\nabla_u \sum_i V(u_i)` gives every row's gradient in one backward pass.
    Gradients are taken with respect to ``u`` only; parameters inside ``energy_fn`` receive none.

    Args:
        energy_fn: :math:`V`, shape (n, d) -> (n,).
        position: :math:`u`, shape (n, d).

    Returns:
        ``(energy, grad)`` of shapes (n,) and (n, d), detached from any graph.
    """
    with torch.enable_grad():
        u = position.detach().requires_grad_(True)
        v = energy_fn(u)
        (g,) = torch.autograd.grad(v.sum(), u)
    return v.detach(), g


def reflect(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Fold points into the unit cube and return the slope of the fold.

    With :math:`w = x - 2\,\mathrm{round}(x/2) \in [-1, 1]`, the mirror map is
    :math:`r(x) = |w|` (equal to :func:`ebmfit.domain.reflect_unit`, and bit-exactly the identity
    on :math:`[0, 1]`) and its slope is :math:`\sigma(x) = \mathrm{sign}(w) = \pm 1`
    (:math:`-1` after an odd number of face crossings: the momentum component is negated).
    This form costs five cheap elementwise operations and no comparisons.

    Returns:
        ``(r(x), sigma(x))``, both shaped like ``x``; ``sigma`` is exactly :math:`\pm 1`.
    """
    w = torch.add(x, torch.round(x * 0.5), alpha=-2.0)
    return w.abs(), torch.copysign(w.new_ones(()), w)


def kinetic_energy(
    momentum: torch.Tensor, inverse_mass: torch.Tensor | None = None
) -> torch.Tensor:
    r""":math:`K(p) = \tfrac12 p^\top M^{-1} p` with diagonal :math:`M^{-1}` (d,); shape (n,)."""
    scaled = momentum if inverse_mass is None else momentum * inverse_mass
    return 0.5 * torch.linalg.vecdot(momentum, scaled)


def sample_momentum(
    generator: torch.Generator, like: torch.Tensor, inverse_mass: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Draw :math:`p \sim \mathcal N(0, M)` shaped like ``like`` (n, d); return ``(p, K(p))``."""
    xi = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    k = 0.5 * torch.linalg.vecdot(xi, xi)
    if inverse_mass is None:
        return xi, k
    return xi * torch.rsqrt(inverse_mass), k


def as_step_size(step_size: StepSize, position: torch.Tensor) -> StepSize:
    """A float stays a float; a tensor of shape (n,) becomes (n, 1) to broadcast over rows."""
    if isinstance(step_size, torch.Tensor):
        step_size = step_size.to(dtype=position.dtype, device=position.device)
        return step_size.reshape(-1, 1) if step_size.ndim == 1 else step_size
    return float(step_size)


def reflected_leapfrog(
    position: torch.Tensor,
    momentum: torch.Tensor,
    grad: torch.Tensor,
    energy_fn: EnergyFn,
    step_size: StepSize,
    num_steps: int,
    inverse_mass: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Integrate :math:`L` reflected leapfrog steps
    :math:`(K_{\varepsilon/2} D_\varepsilon K_{\varepsilon/2})^L`.

    Args:
        position: start :math:`u`, shape (n, d), in the cube.
        momentum: start :math:`p`, shape (n, d).
        grad: :math:`\nabla V(u)` at the start, shape (n, d) (from the cached state).
        energy_fn: :math:`V`, shape (n, d) -> (n,).
        step_size: :math:`\varepsilon`, a float or a tensor of shape (n,) (one per chain).
        num_steps: :math:`L \ge 1`.
        inverse_mass: diagonal :math:`M^{-1}`, shape (d,), or ``None`` for the identity.

    Returns:
        ``(position, momentum, energy, grad)`` at the end, shapes (n, d), (n, d), (n,), (n, d).
        Exactly ``num_steps`` energy/gradient evaluations are made.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    eps = as_step_size(step_size, position)
    scalar = not isinstance(eps, torch.Tensor)
    q, g = position, grad
    # p is a fresh tensor from here on, so the updates below may be in place
    p = torch.add(momentum, g, alpha=-0.5 * eps) if scalar else momentum - (0.5 * eps) * g
    v = None
    for i in range(num_steps):
        vel = p if inverse_mass is None else p * inverse_mass
        x = torch.add(q, vel, alpha=eps) if scalar else q + eps * vel
        q, slope = reflect(x)
        p.mul_(slope)
        v, g = energy_and_grad(energy_fn, q)
        kick = eps if i < num_steps - 1 else 0.5 * eps
        if scalar:
            p.add_(g, alpha=-kick)
        else:
            p.sub_(kick * g)
    return q, p, v, g
