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

A correction :math:`Q_V` on the incumbent base P (the fitted base alone) is first *stacked*
with it on the scoring rows (:func:`stack`): the mixture :math:`(1-\varepsilon) Q_V +
\varepsilon P` with :math:`\varepsilon \in [10^{-3}, 1)` maximising their mean
log-likelihood, a concave problem in one variable whose end :math:`\varepsilon \to 1` is the
base itself — a correction that helps a little is kept a little, instead of all or nothing.
A correction on another base (the spline on the uniform base) is mixed with its own base at
an ε tuned on the tuning rows (:func:`defend`).

The choice then compares each candidate with the incumbent through the paired differences
:math:`\delta_i = \ell_c(x_i) - \ell_0(x_i)`: a candidate is eligible only when
:math:`\bar\delta > m\,\mathrm{SE}(\bar\delta)` — :math:`m = 2` (a one-sided test at
about 2 %) for a candidate on another base, :math:`m = 1` for a stacked one.  The stacked
score is :math:`\ge` the base's by construction, but near the null — a small stacked weight
:math:`1 - \varepsilon^*` — its :math:`\bar\delta / \mathrm{SE}` is about half the
t-statistic of :math:`e^{\ell_c - \ell_0} - 1` (whose mean is exactly 0 when the base is the
truth, :math:`\mathbb E_P[q/p] = 1`), so :math:`m = 1` is again a test at about 2 standard
errors; away from the null it has the power of the stacked mixture.  A candidate on another
base is not eligible at all with fewer than :data:`MIN_ROWS_OTHER_BASE` scoring rows (its
margin is then infinite).  The eligible candidate with the highest validation
log-likelihood wins, and the base wins when none is eligible.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from .base import BaseMeasure
from .energies import DefensiveEnergy, Energy, ZeroEnergy
from .partition.auto import cube_oscillation, log_partition_rule
from .partition.importance import log_partition_importance
from .partition.quadrature import log_partition_quadrature
from .partition.result import LogZ

__all__ = [
    "MARGIN_SE",
    "MARGIN_STACKED",
    "MIN_ROWS_OTHER_BASE",
    "MIX_FLOOR",
    "CandidateScore",
    "Selection",
    "base_rows",
    "best_mix",
    "choose",
    "cube_oscillation",
    "defend",
    "honest_log_partition",
    "log_partition_rule",
    "mix_with_base",
    "mixed_rows",
    "row_log_likelihood",
    "stack",
    "stack_weight",
]

#: A candidate must beat the base by this many standard errors of the paired difference.
MARGIN_SE = 2.0
#: … and a correction stacked with the base (see the module docstring) by this many.
MARGIN_STACKED = 1.0
#: A candidate on another base needs at least this many scoring rows: below, the normal
#: approximation behind its 2-SE test is not to be trusted with heavy-tailed log-likelihood
#: differences (seen: R's 82 galaxies, 8 scoring rows, a spline on the uniform base chosen
#: at +2 SE that lost 0.15 nats/row on the test fold).  Stacked candidates need none: they
#: shrink to the base.
MIN_ROWS_OTHER_BASE = 50
#: The smallest weight of the base in any mixture with it (the defensive floor).
MIX_FLOOR = 1e-3
#: Importance draws per batch (4 batches) of an honest log Z, and on a base whose draws are
#: costly (a flow: 32 768 draws in all; V's range is bounded, so the weights stay tame).
LOGZ_DRAWS, LOGZ_DRAWS_COSTLY = 65536, 8192


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
        mix: the weight ε of its base in the mixture ``(1 - ε) Q_V + ε P`` (None: the base).
    """

    name: str
    val_loglik: float
    stderr: float
    delta: float
    delta_se: float
    log_partition: LogZ
    chosen: bool
    mix: float | None = None

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
            mix = "" if c.mix is None else f"  ε = {c.mix:.3g}"
            lines.append(
                f" {mark} {c.name:<18} val loglik {c.val_loglik:.4f} ± {c.stderr:.4f}"
                f"  (vs base {c.delta:+.4f} ± {c.delta_se:.4f}){mix}"
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
                    None if c.get("mix") is None else float(c["mix"]),
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
    energy: Energy,
    base: BaseMeasure,
    *,
    generator: torch.Generator,
    n_samples: int | None = None,
    check: bool = True,
) -> LogZ:
    """log Z of ``e^{-V} dP`` by a rule independent of training (see the module docstring).

    ``check=False`` skips the quadrature's independent adaptive check (its error bar is then
    the two-level difference alone): for the many refits of cross-fitting, whose scores only
    rank candidates; a model that is kept always gets the check.  ``n_samples``: importance
    draws per batch (default :data:`LOGZ_DRAWS`, :data:`LOGZ_DRAWS_COSTLY` on a flow)."""
    if n_samples is None:  # draws per batch of 4 (a flow's draws cost much more)
        n_samples = LOGZ_DRAWS_COSTLY if base.costly_draws else LOGZ_DRAWS
    rule = log_partition_rule(energy, base)
    if rule == "exact":
        return LogZ(0.0, 0.0, "exact", 0, "none")
    if rule == "quadrature":
        return log_partition_quadrature(energy, base, check=check)
    if rule == "ais":  # weights not provably tame: anneal from the base
        from .partition.ais import log_partition_ais

        return log_partition_ais(energy, base, generator=generator)
    return log_partition_importance(
        energy, base, n_samples=n_samples, n_batches=4, generator=generator
    )


@torch.no_grad()
def row_log_likelihood(
    energy: Energy, base: BaseMeasure, U: torch.Tensor, logz: LogZ
) -> np.ndarray:
    """:math:`-V(u) + \\log p(u) - \\log Z` per row of U (shape (n, d)) on the cube → (n,)."""
    dt = energy.param_dtype()
    dev = energy.param_device()
    out = []
    for c in U.split(65536):
        c = c.to(device=dev, dtype=torch.float64)
        v = energy(c.to(dt)).to(torch.float64)
        out.append((-v + base.log_prob(c).to(torch.float64)).cpu())
    return torch.cat(out).numpy() - logz.value


#: Weights ε of the defensive mixture (1 − ε) Q_V + ε P tried for a correction on another base.
DEFENSIVE_MIX = (MIX_FLOOR, 1e-2, 5e-2)
#: The largest ε of a stacked mixture (ε = 1 is the base alone, which is its own candidate).
MIX_CEIL = 1.0 - 1e-6


def mixed_rows(r: np.ndarray, r0: np.ndarray, eps: float) -> np.ndarray:
    """log((1 − ε) e^r + ε e^{r0}) per row (shapes (n,)), stably: the mixture's log-density
    from its two parts'."""
    return np.logaddexp(math.log1p(-eps) + r, math.log(eps) + r0)


@torch.no_grad()
def base_rows(base: BaseMeasure, U: torch.Tensor) -> np.ndarray:
    """log p(u) of the base alone (V ≡ 0, log Z = 0) per row of U (shape (n, d)) → (n,)."""
    zero = ZeroEnergy(U.shape[1]).to(U.device)
    return row_log_likelihood(zero, base, U, LogZ(0.0, 0.0, "exact", 0))


def best_mix(r: np.ndarray, r0: np.ndarray, grid: tuple[float, ...]) -> float:
    """The ε of ``grid`` maximising the mean of :func:`mixed_rows` ``(r, r0, ε)``."""
    return max(grid, key=lambda e: float(np.mean(mixed_rows(r, r0, e))))


def stack_weight(r: np.ndarray, r0: np.ndarray, floor: float = MIX_FLOOR) -> float:
    r"""The weight :math:`\varepsilon^* = \arg\max_{\varepsilon \in [\text{floor}, 1)}
    \frac1n \sum_i \log\big((1-\varepsilon) e^{r_i} + \varepsilon e^{r_{0,i}}\big)`.

    ``r``, ``r0``: log-densities of the correction and of its base at the same n rows, shape
    (n,).  The objective is concave in ε (a log of a function affine in ε), so the maximiser
    is found by bisection on the sign of its derivative, :math:`\frac1n\sum_i
    (e^{r_{0,i}} - e^{r_i}) / q_i(\varepsilon)`, to 10⁻¹⁰ in ε; the result is clipped to
    ``[floor, MIX_CEIL]``.  Rows where both are −inf are ignored.
    """
    r = np.asarray(r, dtype=np.float64)
    r0 = np.asarray(r0, dtype=np.float64)
    if r.shape != r0.shape or r.ndim != 1:
        raise ValueError(f"r and r0 must have the same shape (n,), got {r.shape}, {r0.shape}")
    keep = np.isfinite(r) | np.isfinite(r0)
    r, r0 = r[keep], r0[keep]
    if r.size == 0:
        return MIX_CEIL
    # the derivative in ε of the mean log mixture, scaled row-wise by e^{-max(r, r0)} for
    # stability: d_i(ε) = (b_i − a_i) / ((1 − ε) a_i + ε b_i) with a = e^{r−m}, b = e^{r0−m}
    m = np.maximum(r, r0)
    a, b = np.exp(r - m), np.exp(r0 - m)

    def slope(eps: float) -> float:
        return float(np.mean((b - a) / ((1 - eps) * a + eps * b)))

    lo, hi = floor, MIX_CEIL
    if slope(lo) <= 0:
        return lo
    if slope(hi) >= 0:
        return hi
    while hi - lo > 1e-10:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


@torch.no_grad()
def stack(
    energy: Energy, base: BaseMeasure, U: torch.Tensor, logz: LogZ, floor: float = MIX_FLOOR
) -> tuple[DefensiveEnergy, LogZ]:
    r"""Stack a correction with its base: :math:`(1-\varepsilon^*) Q_V + \varepsilon^* P`, ε* by
    :func:`stack_weight` on the rows U (shape (n, d), the scoring rows).

    Returns the mixture's energy W (:class:`~ebmfit.energies.DefensiveEnergy`) and its log Z
    (0, with ``(1 − ε*)`` times the error of ``logz``), as :func:`defend` does.
    """
    r = row_log_likelihood(energy, base, U, logz)
    r0 = base_rows(base, U)
    return mix_with_base(energy, logz, stack_weight(r, r0, floor))


def mix_with_base(energy: Energy, logz: LogZ, eps: float) -> tuple[DefensiveEnergy, LogZ]:
    """:math:`(1-\\varepsilon) Q_V + \\varepsilon P` as an energy on P, with its log Z (0, with
    ``(1 − ε)`` times the error of ``logz``)."""
    w = DefensiveEnergy(energy, logz.value, eps).to(energy.param_device())
    return w, LogZ(0.0, (1 - eps) * logz.stderr, logz.method, logz.n_evals, logz.bias)


@torch.no_grad()
def defend(
    energy: Energy,
    base: BaseMeasure,
    U_val: torch.Tensor,
    logz: LogZ,
    grid: tuple[float, ...] = DEFENSIVE_MIX,
) -> tuple[DefensiveEnergy, LogZ]:
    r"""Mix a fitted correction with its base, :math:`(1-\varepsilon) Q_V + \varepsilon P`.

    ε is chosen on the validation rows from ``grid`` (at least 10⁻³: a floor, so one held-out
    row in a gap of the training data costs at most :math:`-\log\varepsilon` nats more than
    the base).  Returns the mixture's energy W (:class:`~ebmfit.energies.DefensiveEnergy`) and
    its log Z: 0, with ``(1 − ε)`` times the error of ``logz`` (see that class).
    """
    r = row_log_likelihood(energy, base, U_val, logz)  # log q_V(u) on the cube
    return mix_with_base(energy, logz, best_mix(r, base_rows(base, U_val), grid))


def choose(
    rows: dict[str, np.ndarray],
    logz: dict[str, LogZ],
    *,
    incumbent: str,
    log_volume: float,
    margin_se: float | dict[str, float] = MARGIN_SE,
    mix: dict[str, float] | None = None,
    scored_by: str = "",
    force: str | None = None,
) -> Selection:
    """Pick a candidate from per-row validation log-likelihoods (see the module docstring).

    ``rows[name]``: shape (n_val,) on the cube; ``logz[name]``: its log Z (for the error bar);
    ``incumbent``: the name of the base alone; ``log_volume``: log |K| (user units);
    ``margin_se``: the margin in SE of the paired difference, one number or one per candidate
    (missing names: :data:`MARGIN_SE`); ``mix``: each candidate's ε, for the record;
    ``scored_by``: how the rows were scored, put at the front of the rule (e.g.
    ``"5-fold cross-fitted"``);
    ``force``: keep this candidate whatever the scores (they are still recorded).
    """
    margins = margin_se if isinstance(margin_se, dict) else dict.fromkeys(rows, margin_se)
    mix = mix or {}
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
        s
        for s in scores
        if s[0] != incumbent and math.isfinite(s[1]) and s[3] > margins.get(s[0], MARGIN_SE) * s[4]
    ]
    best = max(eligible, key=lambda s: s[1])[0] if eligible else incumbent
    per = {s[0]: margins.get(s[0], MARGIN_SE) for s in scores if s[0] != incumbent}
    if len(set(per.values())) > 1:
        how = ", ".join(f"{k}: {m:g}" for k, m in per.items())
        rule = f"beat the base by > m SE of the paired difference ({how}), then highest"
    else:
        m = next(iter(per.values()), MARGIN_SE)
        rule = f"beat the base by > {m:g} SE of the paired difference, then highest"
    if scored_by:
        rule = f"{scored_by}; {rule}"
    if force is not None:  # selection="none": the requested candidate, scored for the record
        best, rule = force, "none (the requested model is kept)"
    cands = [
        CandidateScore(nm, m, se, dl, dse, logz[nm], nm == best, mix.get(nm))
        for nm, m, se, dl, dse in scores
    ]
    return Selection(cands, best, int(n), rule)
