r"""Compression with a certificate: a smaller model and a certified bound on its KL to the original."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from scipy.stats import qmc

from ..energies import Energy, LinearEnergy
from ..energies.interval import F64
from ..grid import gauss_legendre_1d, tensor_grid
from ..model import EnergyModel
from .kl import KLCertificate, kl_bound

__all__ = ["compress"]


def _prune_(energy: Energy, amount: float) -> None:
    """Zero the fraction ``amount`` of smallest-magnitude weights of every weight tensor."""
    with torch.no_grad():
        if isinstance(energy, LinearEnergy):
            tensors = [(energy.coef, energy.mask > 0)]
        else:
            tensors = [
                (p, torch.ones_like(p, dtype=torch.bool))
                for n, p in energy.named_parameters()
                if p.dim() >= 2 or n.endswith("coef")
            ]
        for p, sel in tensors:
            vals = p[sel].abs()
            k = int(math.floor(amount * vals.numel()))
            if k == 0:
                continue
            thr = torch.kthvalue(vals.flatten().to(F64), k).values
            p[sel & (p.abs().to(F64) <= thr)] = 0.0


def _distil(
    teacher: Energy, student: Energy, *, max_iter: int = 500, random_state: int = 0
) -> Energy:
    """Least-squares fit of the student to the teacher energy (up to a constant) on a grid."""
    d = teacher.dim
    n = {1: 2048, 2: 96, 3: 32}.get(d, 0)
    if n:
        ax, _ = gauss_legendre_1d(n // 4, 4)
        U = tensor_grid([ax] * d)
    else:
        U = torch.as_tensor(qmc.Sobol(d, scramble=True, seed=random_state).random_base2(15))
    with torch.no_grad():
        target = torch.cat([teacher(c.to(teacher.param_dtype())).to(F64) for c in U.split(65536)])
    target = target - target.mean()
    if isinstance(student, LinearEnergy):
        Phi = student.features(U.to(student.coef.dtype))
        Phi = Phi - Phi.mean(0)
        cols = student.mask.reshape(-1) > 0
        sol = torch.linalg.lstsq(Phi[:, cols], target[:, None].to(Phi.dtype)).solution[:, 0]
        with torch.no_grad():
            c = torch.zeros_like(student.coef).reshape(-1)
            c[cols] = sol
            student.coef.copy_(c.reshape(student.coef.shape))
        return student
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(random_state)
    for _ in range(max_iter):
        idx = torch.randint(0, U.shape[0], (min(4096, U.shape[0]),), generator=g)
        v = student(U[idx].to(student.param_dtype())).to(F64)
        r = v - target[idx]
        loss = ((r - r.mean()) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student


def compress(
    model: EnergyModel,
    how: str = "float16",
    *,
    amount: float = 0.5,
    student: Energy | None = None,
    tol: float = 0.1,
    random_state: int = 0,
    **osc_kwargs: Any,
) -> tuple[EnergyModel, KLCertificate]:
    r"""Compress a model and certify the KL between the compressed and the original law.

    ``how``:

    * ``"float16"`` / ``"bfloat16"``: every parameter rounded to that format (kept in the
      model's dtype, so evaluation is unchanged and saving the weights as 16-bit is lossless);
    * ``"prune"``: magnitude pruning, the fraction ``amount`` of smallest weights of every
      weight matrix (or of the coefficients of a linear energy) set to zero;
    * ``"distil"``: fit ``student`` (a smaller energy) to the original energy by least squares
      on a grid (exactly for linear students), i.e. a small :math:`\|V_s - V - c\|_2`.

    ``random_state`` seeds the distillation's point set and minibatches and the certificate's
    Sobol incumbents.  Returns ``(compressed_model, certificate)`` with the certificate of
    :func:`kl_bound` (original = A, compressed = B).
    """
    energy = model.energy_fn
    if how in ("float16", "bfloat16"):
        new = copy.deepcopy(energy)
        dt = torch.float16 if how == "float16" else torch.bfloat16
        with torch.no_grad():
            for p in new.parameters():
                p.copy_(p.to(dt).to(p.dtype))
    elif how == "prune":
        if not 0 <= amount < 1:
            raise ValueError("amount must be in [0, 1)")
        new = copy.deepcopy(energy)
        _prune_(new, amount)
    elif how == "distil":
        if student is None:
            raise ValueError("how='distil' needs student=, e.g. LegendreEnergy(d, 8)")
        new = _distil(energy, copy.deepcopy(student), random_state=random_state)
    else:
        raise ValueError(
            f"unknown compression {how!r}: use 'float16', 'bfloat16', 'prune' or 'distil'"
        )
    for p in new.parameters():
        p.requires_grad_(False)
    out = EnergyModel(new, model.domain, model.base)
    osc_kwargs.setdefault("random_state", random_state)
    label = f"compressed ({how})"
    cert = kl_bound(model, out, tol=tol, labels=("original", label), **osc_kwargs)
    return out, cert
