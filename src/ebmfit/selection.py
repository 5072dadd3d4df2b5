r"""Model selection on held-out rows with honest log Z: never worse than the base.

Every candidate :math:`(V_c, P_c)` is scored by its validation log-likelihood per row,

.. math:: \ell_c(x_i) = -V_c(u_i) + \log p_c(u_i) - \log \hat Z_c - \log|K|,

with :math:`\log \hat Z_c` from a rule that does not depend on how the candidate was trained:
exactly 0 for :math:`V \equiv 0`, tensor quadrature checked against an adaptive rule in
d ≤ 3, importance sampling from the (exactly sampled) fitted base when V's oscillation over the
cube is provably small (a bounded residual: weights in :math:`(e^{-s}, e^{s})`), and annealed
importance sampling otherwise, each with its error.  The
standard error of the mean validation log-likelihood combines the rows' spread and log Z's:

.. math:: \mathrm{SE}_c = \sqrt{\widehat{\mathrm{Var}}(\ell_c)/n + \mathrm{SE}(\log\hat Z_c)^2}.

The choice compares each candidate with the *incumbent* (the fitted base alone) through the
paired differences :math:`\delta_i = \ell_c(x_i) - \ell_0(x_i)`: a candidate is eligible only
when :math:`\bar\delta > 2\,\mathrm{SE}(\bar\delta)` (a one-sided test at about 2 %), which
guards against a correction that only fits the validation noise; the eligible candidate with
the highest validation log-likelihood wins, and the base wins when none is eligible.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from .base import BaseMeasure
from .energies import DefensiveEnergy, ZeroEnergy
from .partition.auto import cube_oscillation, log_partition_rule
from .partition.importance import log_partition_importance
from .partition.quadrature import log_partition_quadrature
from .partition.result import LogZ

__all__ = [
    "MARGIN_SE",
    "CandidateScore",
    "Selection",
    "choose",
    "cube_oscillation",
    "defend",
    "honest_log_partition",
    "log_partition_rule",
    "row_log_likelihood",
]

#: A candidate must beat the base by this many standard errors of the paired difference.
MARGIN_SE = 2.0


class CandidateScore(NamedTuple):
    """One row of ``EnergyDensity.selection_.candidates`` (nats per row, user coordinates).

    Attributes:
        name: what the candidate is, e.g. ``"base"``, ``"spline|uniform"``, ``"residual|base"``.
        val_loglik: mean validation log-likelihood per row.
        stderr: its standard error (rows' spread and log Z's error).
        delta: ``val_loglik`` minus the base's (0 for the base).
        delta_se: standard error of the paired difference.
        log_partition: the candidate's log Z (value, stderr, method, ...).
        chosen: whether it was selected.
    """

    name: str
    val_loglik: float
    stderr: float
    delta: float
    delta_se: float
    log_partition: LogZ
    chosen: bool

    def to_dict(self) -> dict:
        d = self._asdict()
        d["log_partition"] = self.log_partition.to_dict()
        return d


class Selection(NamedTuple):
    """What ``EnergyDensity.fit`` compared and what it kept (``selection_``)."""

    candidates: list[CandidateScore]
    chosen: str
    n_val: int
    rule: str

    def __str__(self) -> str:
        lines = [f"selection on {self.n_val} validation rows ({self.rule}):"]
        for c in self.candidates:
            mark = "*" if c.chosen else " "
            lines.append(
                f" {mark} {c.name:<18} val loglik {c.val_loglik:.4f} ± {c.stderr:.4f}"
                f"  (vs base {c.delta:+.4f} ± {c.delta_se:.4f})"
            )
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, d: dict) -> Selection:
        """Rebuild from :meth:`to_dict` (e.g. the ``selection`` extra of a model file)."""
        cands = []
        for c in d["candidates"]:
            lz = LogZ.from_dict(c["log_partition"])
            cands.append(
                CandidateScore(
                    str(c["name"]),
                    float(c["val_loglik"]),
                    float(c["stderr"]),
                    float(c["delta"]),
                    float(c["delta_se"]),
                    lz,
                    bool(c["chosen"]),
                )
            )
        return cls(cands, str(d["chosen"]), int(d["n_val"]), str(d["rule"]))

    def to_dict(self) -> dict:
        return {
            "candidates": [c.to_dict() for c in self.candidates],
            "chosen": self.chosen,
            "n_val": self.n_val,
            "rule": self.rule,
        }


@torch.no_grad()
def honest_log_partition(
    energy, base: BaseMeasure, *, generator: torch.Generator, n_samples: int = 65536
) -> LogZ:
    """log Z of ``e^{-V} dP`` by a rule independent of training (see the module docstring)."""
    rule = log_partition_rule(energy, base)
    if rule == "exact":
        return LogZ(0.0, 0.0, "exact", 0, "none")
    if rule == "quadrature":
        return log_partition_quadrature(energy, base)
    if rule == "ais":  # weights not provably tame: anneal from the base
        from .partition.ais import log_partition_ais

        return log_partition_ais(energy, base, generator=generator)
    return log_partition_importance(
        energy, base, n_samples=n_samples, n_batches=4, generator=generator
    )


@torch.no_grad()
def row_log_likelihood(energy, base: BaseMeasure, U: torch.Tensor, logz: LogZ) -> np.ndarray:
    """:math:`-V(u) + \\log p(u) - \\log Z` per row of U (shape (n, d)) on the cube → (n,)."""
    dt = energy.param_dtype()
    dev = energy.param_device()
    out = []
    for c in U.split(65536):
        c = c.to(device=dev, dtype=torch.float64)
        v = energy(c.to(dt)).to(torch.float64)
        out.append((-v + base.log_prob(c).to(torch.float64)).cpu())
    return torch.cat(out).numpy() - logz.value


#: Weights ε of the defensive mixture (1 − ε) Q_V + ε P tried for every fitted correction.
DEFENSIVE_MIX = (1e-3, 1e-2, 5e-2)


@torch.no_grad()
def defend(
    energy, base: BaseMeasure, U_val: torch.Tensor, logz: LogZ, grid=DEFENSIVE_MIX
) -> tuple[DefensiveEnergy, LogZ]:
    r"""Mix a fitted correction with its base, :math:`(1-\varepsilon) Q_V + \varepsilon P`.

    ε is chosen on the validation rows from ``grid`` (at least 10⁻³: a floor, so one held-out
    row in a gap of the training data costs at most :math:`-\log\varepsilon` nats more than
    the base).  Returns the mixture's energy W (:class:`~ebmfit.energies.DefensiveEnergy`) and
    its log Z: 0, with ``(1 − ε)`` times the error of ``logz`` (see that class).
    """
    r = row_log_likelihood(energy, base, U_val, logz)  # log q_V(u) on the cube
    lb = row_log_likelihood(ZeroEnergy(energy.dim), base, U_val, LogZ(0.0, 0.0, "exact", 0))
    best = max(
        grid, key=lambda e: float(np.mean(np.logaddexp(math.log1p(-e) + r, math.log(e) + lb)))
    )
    w = DefensiveEnergy(energy, logz.value, best).to(energy.param_device())
    lz = LogZ(0.0, (1 - best) * logz.stderr, logz.method, logz.n_evals, logz.bias)
    return w, lz


def choose(
    rows: dict[str, np.ndarray],
    logz: dict[str, LogZ],
    *,
    incumbent: str,
    log_volume: float,
    margin_se: float = MARGIN_SE,
    force: str | None = None,
) -> Selection:
    """Pick a candidate from per-row validation log-likelihoods (see the module docstring).

    ``rows[name]``: shape (n_val,) on the cube; ``logz[name]``: its log Z (for the error bar);
    ``incumbent``: the name of the base alone; ``log_volume``: log |K| (user units);
    ``force``: keep this candidate whatever the scores (they are still recorded).
    """
    base_rows = rows[incumbent]
    n = base_rows.size
    scores = []
    for name, r in rows.items():
        se_z = logz[name].stderr if math.isfinite(logz[name].stderr) else math.inf
        mean = float(np.mean(r)) if np.all(np.isfinite(r)) else -math.inf
        se = math.sqrt(float(np.var(r, ddof=1)) / n + se_z**2) if n > 1 else math.inf
        if name == incumbent:
            delta, dse = 0.0, 0.0
        elif math.isfinite(mean):
            diff = r - base_rows
            se_b = logz[incumbent].stderr
            dse = math.sqrt(float(np.var(diff, ddof=1)) / n + se_z**2 + se_b**2) if n > 1 else 0
            delta = float(np.mean(diff))
        else:
            delta, dse = -math.inf, math.inf
        scores.append((name, mean - log_volume, se, delta, dse))
    eligible = [
        s for s in scores if s[0] != incumbent and math.isfinite(s[1]) and s[3] > margin_se * s[4]
    ]
    best = max(eligible, key=lambda s: s[1])[0] if eligible else incumbent
    rule = f"beat the base by > {margin_se:g} SE of the paired difference, then highest"
    if force is not None:  # selection="none": the requested candidate, scored for the record
        best, rule = force, "none (the requested model is kept)"
    cands = [
        CandidateScore(nm, m, se, dl, dse, logz[nm], nm == best) for nm, m, se, dl, dse in scores
    ]
    return Selection(cands, best, int(n), rule)
