r"""The energy interface and the shared machinery of linear (tensor-product) energies.

An energy is an ``nn.Module`` mapping points of the unit cube, shape (n, d), to
:math:`V(u) \in \mathbb{R}`, shape (n,).  The model density is
:math:`q(u) \propto e^{-V(u)}\,dP/du`.

Every family also provides

* ``spec()``: a JSON-serialisable dict from which :func:`ebmfit.energies.make_energy`
  rebuilds the module (weights travel separately, in safetensors);
* the bounds protocol of :mod:`ebmfit.energies.interval`: ``interval_bounds(lo, hi)``, *sound*
  bounds :math:`\underline V \le V(u) \le \overline V` for all u in each box
  :math:`[lo_k, hi_k]`, shape (m, d) → two tensors of shape (m,), and ``gradient_bounds``,
  ``first_order_bounds``, ``evaluation_error``, ``difference_rule`` (defaults here).  Used by
  the exact sampler and by the certificates; they must never be violated.

Linear energies :math:`V_\theta(u) = \sum_{j\in J} \theta_j \prod_{i=1}^d b_{j_i}(u_i)` (a
tensor-product basis with a multi-index set J) make the negative log-likelihood convex in θ
and admit fast evaluation on tensor grids by mode products.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from ..grid import tensor_grid  # re-exported: ``from ebmfit.energies.base import tensor_grid``
from .interval import EPS64, F64, DifferenceRule, FirstOrder, Interval, meet, mid_rad, tensor_range

__all__ = ["Energy", "LinearEnergy"]


class Energy(nn.Module):
    """Base class of all energies. Subclasses implement ``forward``, ``spec``, ``interval_bounds``."""

    dim: int
    family: str = "energy"

    def spec(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def interval_bounds(
        self, lo: torch.Tensor, hi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(
            f"{type(self).__name__} has no sound interval bounds; exact sampling and certificates "
            "need them"
        )

    def gradient_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval | None:
        """Sound enclosure of ∇V over boxes, shape (m, d) each, or None (no rule)."""
        return None

    def first_order_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> FirstOrder | None:
        r"""The mean-value form :math:`V(u) \in V(c) + g\cdot(u - c)`, g in the gradient
        enclosure, with V(c) enclosed by :meth:`interval_bounds` at the centre; None without
        :meth:`gradient_bounds`."""
        lo, hi = lo.to(F64), hi.to(F64)
        g = self.gradient_bounds(lo, hi)
        if g is None:
            return None
        c = (lo + hi) / 2
        vl, vh = (t.to(F64) for t in self.interval_bounds(c, c))
        return FirstOrder((vl + vh) / 2, g[0], g[1], (vh - vl) / 2)

    def evaluation_error(
        self, lo: torch.Tensor, hi: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor | float:
        """Bound on |V evaluated in ``dtype`` − exact V| over boxes (0: the family's
        ``interval_bounds`` carry their own allowance)."""
        return 0.0

    def difference_rule(self, other: Energy) -> DifferenceRule | None:
        """Joint enclosures of ``other − self`` (no dependency problem), or None."""
        return None

    @property
    def is_linear(self) -> bool:
        return False

    @property
    def panel_multiple(self) -> int:
        """Composite quadrature rules should cut each axis into a multiple of this many cells.

        1 for smooth energies; a piecewise-polynomial energy returns its number of polynomial
        pieces per axis, so that every cell lies inside one piece and Gauss–Legendre's error
        estimate by two resolutions holds (a kink inside a cell makes it non-monotone).
        """
        return 1

    def param_dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        for b in self.buffers():
            if b.is_floating_point():
                return b.dtype
        return torch.get_default_dtype()

    def param_device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def grid_values(self, axes: list[torch.Tensor]) -> torch.Tensor:
        """V on the tensor grid ``axes[0] × … × axes[d-1]``, flattened in C order, shape (∏ n_i,).

        The generic implementation evaluates the points in chunks; linear energies override it
        with mode products.
        """
        pts = tensor_grid(axes)
        return torch.cat([self(c) for c in pts.split(65536)])


class LinearEnergy(Energy):
    r"""Tensor-product linear energy :math:`V_\theta(u) = \sum_{j \in J}\theta_j \prod_i b_{j_i}(u_i)`.

    Coefficients are stored as a full tensor ``coef`` of shape (K,)*d; a fixed 0/1 ``mask`` of the
    same shape selects J (the constant multi-index is always excluded for basis families that
    contain the constant, since it is absorbed by log Z).

    Subclasses implement the 1-D basis ``basis1d(t) -> (n, K)`` and its sound range over
    intervals ``basis1d_range(a, b) -> (lo, hi)`` of shape (m, K).
    """

    def __init__(
        self, dim: int, n_basis: int, mask: torch.Tensor, dtype: torch.dtype = torch.float64
    ):
        super().__init__()
        self.dim = int(dim)
        self.n_basis = int(n_basis)
        self.register_buffer("mask", mask.to(dtype))
        self.coef = nn.Parameter(torch.zeros(mask.shape, dtype=dtype))

    @property
    def is_linear(self) -> bool:
        return True

    @property
    def n_params(self) -> int:
        return int(self.mask.sum().item())

    def basis1d(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def basis1d_range(
        self, a: torch.Tensor, b: torch.Tensor
    ) -> Interval:  # pragma: no cover - interface
        raise NotImplementedError

    def penalty_weights(self) -> torch.Tensor:  # pragma: no cover - interface
        """Diagonal roughness weights (shape of ``coef``) or override :meth:`roughness`."""
        raise NotImplementedError

    def roughness(self, coef: torch.Tensor | None = None) -> torch.Tensor:
        r"""Roughness penalty :math:`R(\theta) \ge 0`, a quadratic form in θ (default diagonal)."""
        return (self.penalty_weights() * self.effective_coef(coef) ** 2).sum()

    def roughness_diag(self) -> torch.Tensor:
        """Diagonal of the Hessian of :meth:`roughness` (shape of ``coef``)."""
        return 2 * self.penalty_weights() * self.mask

    def effective_coef(self, coef: torch.Tensor | None = None) -> torch.Tensor:
        return (self.coef if coef is None else coef) * self.mask

    # --------------------------------------------------------------- evaluation
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = u.to(self.coef.dtype)
        n = u.shape[0]
        T = self.effective_coef()
        K = self.n_basis
        # contract one axis at a time: A has shape (n, K^(d-i))
        B = self.basis1d(u[:, 0])  # (n, K)
        A = B @ T.reshape(K, -1)  # (n, K^(d-1))
        for i in range(1, self.dim):
            B = self.basis1d(u[:, i])
            A = (A.reshape(n, K, -1) * B[:, :, None]).sum(dim=1)
        return A.reshape(n)

    def grid_values(
        self, axes: list[torch.Tensor], coef: torch.Tensor | None = None
    ) -> torch.Tensor:
        T = self.effective_coef(coef)
        for i, ax in enumerate(axes):
            B = self.basis1d(ax.to(T.dtype))  # (n_i, K)
            T = torch.tensordot(B, T, dims=([1], [i]))  # new axis first
            T = T.movedim(0, i)
        return T.reshape(-1)

    def penalty_transform(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        r"""A per-axis orthogonal Q (K, K) in which the roughness Hessian is diagonal, and that
        diagonal (shape of ``coef``): :math:`\theta = \eta \times_1 Q \cdots \times_d Q`.
        ``Q = None`` means the penalty is already diagonal in θ."""
        return None, self.roughness_diag()

    def grid_moments(
        self,
        axes: list[torch.Tensor],
        weights: torch.Tensor,
        power: int = 1,
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r""":math:`\sum_g w_g \phi_j(u_g)^{p}` for every multi-index j (shape of ``coef``).

        ``weights`` holds one value per node of the tensor grid ``axes`` (flattened in C order);
        this is the adjoint of :meth:`grid_values` (mode products with the transposed bases).
        With ``transform`` Q the basis is replaced by ``B @ Q`` on every axis.
        """
        T = weights.reshape([a.shape[0] for a in axes]).to(self.coef.dtype)
        for i, ax in enumerate(axes):
            B = self.basis1d(ax.to(T.dtype))
            if transform is not None:
                B = B @ transform
            B = B**power  # (n_i, K)
            T = torch.tensordot(B, T, dims=([0], [i])).movedim(0, i)
        return T * self.mask

    def features(self, u: torch.Tensor) -> torch.Tensor:
        """The design matrix Φ(u), shape (n, K^d) (masked columns are zero). For tests / small d."""
        u = u.to(self.coef.dtype)
        Phi = self.basis1d(u[:, 0])
        for i in range(1, self.dim):
            Phi = (Phi[:, :, None] * self.basis1d(u[:, i])[:, None, :]).reshape(u.shape[0], -1)
        return Phi * self.mask.reshape(1, -1)

    def mean_features(self, u: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        r""":math:`\frac1n\sum_k \phi(u_k)` as a tensor of the shape of ``coef``, computed by chunks."""
        total = torch.zeros_like(self.coef)
        K = self.n_basis
        for c in u.to(self.coef.dtype).split(chunk):
            B = [self.basis1d(c[:, i]) for i in range(self.dim)]
            letters = "abcdefgh"[: self.dim]
            expr = ",".join(f"n{x}" for x in letters) + "->" + letters
            total += torch.einsum(expr, *B).reshape([K] * self.dim)
        return total * self.mask / u.shape[0]

    # --------------------------------------------------------------- bounds
    def interval_bounds(
        self,
        lo: torch.Tensor,
        hi: torch.Tensor,
        chunk: int = 2048,
        center: torch.Tensor | None = None,
    ) -> Interval:
        r"""Sound bounds via interval products of 1-D basis ranges.

        Each term :math:`\theta_j\prod_i b_{j_i}(u_i)` is enclosed by multiplying the exact
        ranges of the 1-D factors over the box (interval multiplication) and scaling by
        :math:`\theta_j`; the sum of the enclosures encloses V.

        ``center`` (shape (m,)), only for bases with :math:`\sum_j \phi_j \equiv 1` on the
        boxes (B-splines): V is enclosed as :math:`c + \sum_j(\theta_j - c)\phi_j`, which is
        much tighter when c is near the active coefficients.
        """
        T = self.effective_coef().detach()
        lo = lo.to(T.dtype)
        hi = hi.to(T.dtype)
        chunk = max(1, min(chunk, 2_000_000 // T.numel()))  # bounded memory: chunk × K^d terms
        centers = (
            torch.zeros(lo.shape[0], dtype=T.dtype, device=T.device)
            if center is None
            else center.to(T.dtype)
        )
        outs_lo, outs_hi = [], []
        for a, b, cen in zip(lo.split(chunk), hi.split(chunk), centers.split(chunk), strict=True):
            m = a.shape[0]
            L, H = self.basis1d_range(a[:, 0], b[:, 0])  # (m, K)
            for i in range(1, self.dim):
                l2, h2 = self.basis1d_range(a[:, i], b[:, i])
                c = torch.stack(
                    [
                        (L[:, :, None] * l2[:, None, :]),
                        (L[:, :, None] * h2[:, None, :]),
                        (H[:, :, None] * l2[:, None, :]),
                        (H[:, :, None] * h2[:, None, :]),
                    ]
                )
                L = c.amin(0).reshape(m, -1)
                H = c.amax(0).reshape(m, -1)
            t = T.reshape(1, -1) - cen[:, None]
            vlo = torch.where(t >= 0, t * L, t * H).sum(1) + cen
            vhi = torch.where(t >= 0, t * H, t * L).sum(1) + cen
            outs_lo.append(vlo)
            outs_hi.append(vhi)
        return _widen(torch.cat(outs_lo), torch.cat(outs_hi), T)

    # --------------------------------------------------------------- derivative bounds
    def basis1d_deriv_range(self, a: torch.Tensor, b: torch.Tensor) -> Interval:
        """Sound range of each basis derivative b_k′ over [a, b], shape (m, K) each."""
        raise TypeError(f"no derivative ranges for {type(self).__name__}")

    def basis_sup(self) -> float:
        """sup |b_k| over [0, 1] and k (for the evaluation-error allowance)."""
        return 1.0

    nested_bases = True  # a basis of K functions is the start of every larger one

    @torch.no_grad()
    def gradient_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        r""":math:`\partial_i V = \sum_j \theta_j b'_{j_i}(u_i)\prod_{k\ne i} b_{j_k}(u_k)`
        enclosed by interval products of exact 1-D (derivative) ranges."""
        lo, hi = lo.to(F64), hi.to(F64)
        T = self.effective_coef().detach().to(F64)
        vals = [self.basis1d_range(lo[:, i], hi[:, i]) for i in range(self.dim)]
        ders = [self.basis1d_deriv_range(lo[:, i], hi[:, i]) for i in range(self.dim)]
        out = [
            tensor_range(T, [ders[j] if j == i else vals[j] for j in range(self.dim)])
            for i in range(self.dim)
        ]
        return torch.stack([o[0] for o in out], -1), torch.stack([o[1] for o in out], -1)

    def evaluation_error(self, lo: torch.Tensor, hi: torch.Tensor, dtype: torch.dtype) -> float:
        """Generous bound on the float64 round-off of evaluating the energy at a point."""
        T = self.effective_coef().detach().to(F64)
        bmax = self.basis_sup()
        return float(64 * self.n_basis * self.dim * EPS64 * T.abs().sum() * bmax**self.dim)

    def difference_rule(self, other: Energy) -> DifferenceRule | None:
        """``other − self`` as one linear energy when both use the same basis (nested Legendre or
        cosine bases are embedded in the larger one; splines need equal knots)."""
        if type(other) is not type(self) or other.dim != self.dim:
            return None
        if not self.nested_bases and other.n_basis != self.n_basis:
            return None
        a, b = copy.deepcopy(self).to("cpu", F64), copy.deepcopy(other).to("cpu", F64)
        big = a if a.n_basis >= b.n_basis else b
        out = copy.deepcopy(big)
        K, d = big.n_basis, big.dim

        def embed(e: LinearEnergy) -> torch.Tensor:
            T = torch.zeros([K] * d, dtype=F64)
            T[tuple(slice(0, e.n_basis) for _ in range(d))] = e.effective_coef().detach()
            return T

        with torch.no_grad():
            out.mask.fill_(1.0)
            out.coef.copy_(embed(b) - embed(a))
        return LinearDifference(out)


class LinearDifference:
    """The difference of two linear energies of one basis, as one linear energy: its own
    intervals intersected with the mean-value form around the box centre."""

    method = "difference energy: intervals ∩ mean-value form"

    def __init__(self, diff: LinearEnergy):
        self.diff = diff

    def h(self, u: torch.Tensor) -> torch.Tensor:
        return self.diff(u.to(F64))

    @torch.no_grad()
    def bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        l1, h1 = self.diff.interval_bounds(lo, hi)
        c, r = mid_rad(lo, hi)
        hcl, hch = self.diff.interval_bounds(c, c)
        gl, gh = self.diff.gradient_bounds(lo, hi)
        s = (torch.maximum(gl.abs(), gh.abs()) * r).sum(-1)
        return meet(l1, h1, hcl - s, hch + s)


def _widen(vlo: torch.Tensor, vhi: torch.Tensor, coef: torch.Tensor):
    """Widen bounds by a floating-point round-off allowance so they stay sound."""
    eps = torch.finfo(coef.dtype).eps
    slack = 8 * eps * (coef.abs().sum() + vlo.abs().clamp_min(1.0) + vhi.abs())
    return vlo - slack, vhi + slack


def total_degree_mask(dim: int, degree: int, exclude_constant: bool = True) -> torch.Tensor:
    K = degree + 1
    mask = torch.zeros([K] * dim)
    for idx in itertools.product(range(K), repeat=dim):
        if sum(idx) <= degree:
            mask[idx] = 1.0
    if exclude_constant:
        mask[(0,) * dim] = 0.0
    return mask


def multi_index_grid(dim: int, K: int) -> torch.Tensor:
    """Tensor of shape (K,)*d + (d,) holding the multi-index of every coefficient."""
    ar = torch.arange(K, dtype=torch.float64)
    return tensor_grid([ar] * dim).reshape(*([K] * dim), dim)
