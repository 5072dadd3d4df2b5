r"""The fit loop: stochastic maximum likelihood through the gradient identity (seed §2).

Each step minimises the surrogate

.. math:: \ell(\theta) = \frac1{|B|}\sum_{i\in B} V_\theta(x_i) - \sum_k \operatorname{sg}(\pi_k)\,V_\theta(u_k),

whose gradient is exactly :math:`\mathbb{E}_{\text{data}}[\nabla V] - \mathbb{E}_{\pi}[\nabla V]`,
the gradient identity with the negative phase supplied by a strategy from
:mod:`ebmfit.training.negatives`.  The monitored value is the NLL estimate
:math:`\frac1{|B|}\sum V + \log\sum_k w_k e^{-V(u_k)}`.

Validation uses an independent, finer rule (:func:`ebmfit.partition.quadrature` for d ≤ 3,
otherwise scrambled Sobol for the uniform base and importance sampling from a fixed draw of the
base for a fitted base) and keeps the best state.  A non-finite loss or energy is never
patched: the last good state is restored and the learning rate halved; after ``max_retries``
such events the fit stops, keeps its best validated state and emits a :class:`FitWarning`
(:class:`FitError` only when no validated state is usable).

**Stability diagnostics** (:class:`StabilityMonitor`).  Every step records what the negative
phase saw: the strategy's ``last_info`` (a :class:`~ebmfit.training.negatives.NegativesInfo`:
acceptance rate and step size of MCMC chains), the *energy gap* :math:`\frac1{|B|}\sum_B V - \mathbb{E}_\pi[V]` between the data batch and the
negatives (zero at a stationary point of the likelihood for any family closed under
:math:`V \mapsto cV`, e.g. every MLP with a linear output layer), and for self-normalised
negatives the effective sample size :math:`1/\sum_k \pi_k^2`.  Their means over each
validation interval go into the history.  When chains stop mixing (acceptance near 0 or the
adapted step size collapsing for ``window`` consecutive steps), when the energy gap runs away
(large and still growing) or when the importance-sampling ESS collapses, the loop records a
``"warning"`` row in the history and emits a :class:`FitWarning`; a gap beyond ``max_gap`` is
treated like a non-finite loss (restore, halve the learning rate, reset the chains, and
:class:`FitError` after ``max_retries``).  Nothing is clipped or patched to keep going.
"""

from __future__ import annotations

import copy
import math
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..base import BaseMeasure, Uniform
from ..energies.base import Energy
from ..grid import gauss_legendre_1d
from ..partition.qmc import log_partition_qmc
from ..partition.quadrature import MAX_DIM, default_resolution, grid_log_integrand
from ._progress import nll_offset, progress_bar
from .negatives import NegativePhaseError, Negatives, info_fields
from .parallel import ParallelContext
from .sgd_state import LoopObjects, global_step_stats, load_state, save_state, sgd_config
from .sharding import ShardedNegatives

if TYPE_CHECKING:
    from ..checkpoint import CheckpointSection

__all__ = [
    "FitError",
    "FitResult",
    "FitWarning",
    "StabilityMonitor",
    "fit_sgd",
    "validation_nll",
]


class FitError(RuntimeError):
    """Training diverged and could not be recovered."""


class FitWarning(RuntimeWarning):
    """Training runs but its negative phase looks unreliable (see :class:`StabilityMonitor`)."""


@dataclass
class FitResult:
    n_iter: int
    best_val_nll: float
    best_iter: int
    stop_reason: str
    history: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)


#: A negative-phase strategy: ``strategy(energy, generator) -> Negatives``
#: (:mod:`ebmfit.training.negatives`).
NegativePhase = Callable[[Energy, torch.Generator | None], Negatives]

_CHECK_POINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CHECK_N = 2**16


def base_check_points(base: BaseMeasure, device: torch.device | str) -> torch.Tensor:
    """A fixed draw of ``_CHECK_N`` points from the base (a quarter of them on a base whose
    draws are costly, a flow; seeded; cached per base object)."""
    pts = _CHECK_POINTS.get(base)
    if pts is None:
        g = torch.Generator().manual_seed(12345)
        pts = base.sample(_CHECK_N // 4 if base.costly_draws else _CHECK_N, generator=g)
        _CHECK_POINTS[base] = pts
    return pts.to(device)


def check_log_partition(energy: Energy, base: BaseMeasure) -> float:
    """log Z by the *checking* rule (single level; independent of every training rule)."""
    d = energy.dim
    if d <= MAX_DIM:
        cells, nodes = default_resolution(d)
        ax, w = gauss_legendre_1d(cells, nodes)
        return float(torch.logsumexp(grid_log_integrand(energy, base, [ax] * d, [w] * d), 0))
    if isinstance(base, Uniform):
        return log_partition_qmc(energy, base, n_points=2**13, n_rep=8, random_state=12345).value
    # a fitted base: importance sampling from a fixed seeded draw of the base
    pts = base_check_points(base, energy.param_device())
    dt = energy.param_dtype()
    with torch.no_grad():
        v = torch.cat([energy(c.to(dt)).to(torch.float64) for c in pts.split(65536)])
    return float(torch.logsumexp(-v, 0)) - math.log(v.numel())


@dataclass
class StabilityMonitor:
    """Thresholds of the training diagnostics (see the module docstring).

    Attributes:
        window: consecutive steps a condition must hold before it is reported.
        min_acceptance: mean MCMC acceptance below which chains count as not mixing.
        min_step_size: adapted step size below which chains count as frozen.
        gap_tol: |energy gap| (nats) above which a still-growing gap counts as running away.
        max_gap: |energy gap| treated as a divergence (restore / halve lr / FitError).
        min_ess: effective sample size of self-normalised negatives below which they count
            as collapsed.
        action: ``"warn"`` (record + :class:`FitWarning`), ``"raise"`` (:class:`FitError` at
            the first report) or ``"record"`` (history only).
    """

    window: int = 50
    min_acceptance: float = 0.05
    min_step_size: float = 1e-4
    gap_tol: float = 20.0
    max_gap: float = 1e3
    min_ess: float = 20.0
    action: str = "warn"

    def __post_init__(self) -> None:
        if self.action not in ("warn", "raise", "record"):
            raise ValueError(f"action must be 'warn', 'raise' or 'record', got {self.action!r}")


class _Tracker:
    """Per-step diagnostics: interval means for the history, and the monitor's conditions."""

    def __init__(self, monitor: StabilityMonitor):
        self.m = monitor
        self.interval: list[dict] = []
        self.run = {"mixing": 0, "gap": 0, "ess": 0}
        self.active = dict.fromkeys(self.run, False)
        self.warned: set[str] = set()
        self.gaps: deque = deque(maxlen=2 * monitor.window)
        self.events: list[dict] = []

    def reset_chains(self) -> None:
        self.run = dict.fromkeys(self.run, 0)
        self.gaps.clear()

    def summary(self) -> dict:
        """Means over the steps since the last call (sums for divergence counts)."""
        rows, self.interval = self.interval, []
        out: dict = {}
        keys = {k for r in rows for k, v in r.items() if isinstance(v, (int, float))}
        for k in sorted(keys):
            vals = [float(r[k]) for r in rows if k in r and math.isfinite(r[k])]
            if vals:
                out[k] = sum(vals) if k == "divergences" else sum(vals) / len(vals)
        return out

    def step(self, it: int, info: dict) -> list[tuple[str, str]]:
        """Absorb one step's diagnostics; returns newly triggered ``(kind, message)`` pairs."""
        self.interval.append(info)
        m, w = self.m, self.m.window
        acc, eps = info.get("acceptance_rate"), info.get("step_size")
        adapted = info.get("kernel") in ("mala", "hmc")
        cond = {
            "mixing": adapted
            and (
                (acc is not None and not acc >= m.min_acceptance)
                or (eps is not None and eps < m.min_step_size)
            )
        }
        self.gaps.append(info["energy_gap"])
        growing = False
        if len(self.gaps) == self.gaps.maxlen:
            g = list(self.gaps)
            old, new = sum(g[:w]) / w, sum(g[w:]) / w
            growing = abs(new) > m.gap_tol and abs(new) > abs(old)
        cond["gap"] = growing
        ess = info.get("ess")
        cond["ess"] = ess is not None and ess < m.min_ess
        fired = []
        for k, c in cond.items():
            self.run[k] = self.run[k] + 1 if c else 0
            hit = self.run[k] >= (1 if k == "gap" else w)
            if hit and not self.active[k]:
                fired.append((k, self._message(k, info, w)))
                self.events.append({"iter": it, "warning": k, "message": fired[-1][1]})
            self.active[k] = hit
        return fired

    @staticmethod
    def _message(kind: str, info: dict, w: int) -> str:
        if kind == "mixing":
            return (
                f"MCMC negatives are not mixing: acceptance {info.get('acceptance_rate', 0):.3g}"
                f" at step size {info.get('step_size', 0):.3g} for {w} consecutive steps; "
                "the negative phase no longer estimates E_model[grad V] (lower lr, more "
                "chain steps, or negative_phase='importance'/'exact')"
            )
        if kind == "gap":
            return (
                f"the energy gap mean V(data) - mean V(negatives) = {info['energy_gap']:.4g} "
                f"is large and still growing over {2 * w} steps: the negatives are drifting "
                "away from the model (chains not keeping up, or lr too large)"
            )
        return (
            f"self-normalised importance sampling collapsed: ESS {info.get('ess', 0):.3g} of "
            f"{info.get('n_points', '?')} points for {w} consecutive steps; its negative "
            "phase is dominated by a few points (use persistent chains or a fitted base)"
        )


def _give_up(msg: str, best: dict, history: list[dict], energy: Energy) -> str:
    """Divergence beyond the retries: keep the best validated state and warn, or raise.

    :class:`FitError` only when no validated state is usable (its validation NLL is not
    finite); otherwise a :class:`FitWarning` says what diverged and what was kept.
    """
    energy.load_state_dict(best["state"])  # leave the energy at its best good state
    if not math.isfinite(best["val"]):
        raise FitError(f"{msg}; no validated state is usable")
    kept = (
        f"kept the best validated state (iteration {best['it']}, validation NLL {best['val']:.4f})"
    )
    history.append({"iter": best["it"], "event": f"{msg}; {kept}"})
    warnings.warn(f"{msg}; {kept}", FitWarning, stacklevel=3)
    return "diverged"


@torch.no_grad()
def mean_energy(energy: Energy, U: torch.Tensor, chunk: int = 65536) -> float:
    dt = energy.param_dtype()
    return float(sum(energy(c.to(dt)).double().sum() for c in U.split(chunk)) / U.shape[0])


def validation_nll(energy: Energy, U: torch.Tensor, base: BaseMeasure) -> float:
    """Average NLL (on the unit cube) of the rows of U, with log Z from the checking rule."""
    lb = 0.0 if isinstance(base, Uniform) else float(base.log_prob(U).mean())
    return mean_energy(energy, U) + check_log_partition(energy, base) - lb


def fit_sgd(
    energy: Energy,
    U_train: torch.Tensor,
    U_val: torch.Tensor,
    negatives: NegativePhase,
    *,
    base: BaseMeasure | None = None,
    max_iter: int = 2000,
    lr: float = 2e-3,
    batch_size: int | None = None,
    val_every: int = 50,
    patience: int = 10,
    max_retries: int = 3,
    generator: torch.Generator | None = None,
    progress: bool = False,
    monitor: StabilityMonitor | None = None,
    parallel: ParallelContext | None = None,
    checkpoint: CheckpointSection | None = None,
) -> FitResult:
    """Adam on the gradient-identity surrogate with a linearly decaying learning rate.

    ``U_train``, ``U_val``: data on the unit cube, shapes (n, d) and (n_val, d).
    ``negatives``: a strategy ``(energy, generator) -> Negatives`` from
    :mod:`ebmfit.training.negatives`.  ``monitor``: thresholds of the stability diagnostics
    (default :class:`StabilityMonitor`); what it reported is in ``FitResult.warnings``.
    Returns a :class:`FitResult`; ``energy`` is left at its best-validation state (also when
    the run diverged: ``stop_reason == "diverged"`` with a :class:`FitWarning`, or when
    :class:`FitError` is raised because no validated state is usable).

    ``parallel``: the ranks this fit runs on (default: one process).  Every rank passes the
    same data, energy and generator state; each evaluates its share of the global batch and of
    the negative phase (:mod:`ebmfit.training.sharding`), π is normalised globally and the
    gradients are summed over ranks, so N processes take the single-process steps to
    rounding.  ``checkpoint``: a section of a :class:`~ebmfit.checkpoint.RunCheckpoint`; the
    loop's whole state (energy, Adam, schedule, best state, history, generator, negative
    phase, monitor) is written there after every ``checkpoint.every``-th validation and at the
    end, and a resumed fit continues the same trajectory (bit for bit on one process).
    """
    base = base if base is not None else Uniform(energy.dim)
    monitor = monitor if monitor is not None else StabilityMonitor()
    tracker = _Tracker(monitor)
    par = parallel if parallel is not None else ParallelContext()
    W = par.world_size
    if checkpoint is not None and generator is None:
        generator = torch.Generator(device=energy.param_device()).manual_seed(0)
    if W > 1:
        par.broadcast_parameters(energy)  # rank 0's initial weights everywhere
        negatives = ShardedNegatives(negatives, par, generator)
    dev, dt = energy.param_device(), energy.param_dtype()
    U_train = U_train.to(device=dev, dtype=dt)
    n = U_train.shape[0]
    bs = n if batch_size is None or batch_size >= n else int(batch_size)
    opt = torch.optim.Adam(energy.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.02, 1 - t / max_iter))
    best = {
        "val": validation_nll(energy, U_val, base),
        "it": 0,
        "state": copy.deepcopy(energy.state_dict()),
    }
    good_state = (copy.deepcopy(energy.state_dict()), copy.deepcopy(opt.state_dict()))
    history: list[dict] = [{"iter": 0, "val_nll": best["val"]}]
    retries, since_best, reason = 0, 0, "max_iter"
    it, n_val_done = 0, 0
    cfg = sgd_config(
        energy, negatives, n_train=n, batch_size=bs, max_iter=max_iter, lr=lr, val_every=val_every
    )
    objs = LoopObjects(energy, opt, sched, generator, negatives, tracker)
    saved = load_state(checkpoint, par, cfg, objs)
    if saved is not None:
        it, best, good_state, history = saved["it"], saved["best"], saved["good"], saved["history"]
        retries, since_best, n_val_done = saved["retries"], saved["since_best"], saved["n_val"]
        if saved["finished"]:
            energy.load_state_dict(best["state"])
            return FitResult(it, best["val"], best["it"], saved["reason"], history, tracker.events)
    bar = progress_bar(progress, total=max_iter, desc="fit")
    off = nll_offset(progress)
    while it < max_iter:
        idx = torch.randint(0, n, (bs,), generator=generator, device=dev) if bs < n else slice(None)
        if W > 1:  # this rank's share of the global batch
            s, e = par.share(bs)
            idx = idx[s:e] if bs < n else slice(s, e)
        try:
            neg = negatives(energy, generator)
        except NegativePhaseError as e:
            neg, finite, why = None, False, str(e)
        if W > 1 and neg is None:  # the other ranks wait in the collective: join it
            global_step_stats(par, None, None, None, bs)
        if neg is not None:
            V_data = energy(U_train[idx])
            V_neg = energy(neg.points.to(dt)).to(torch.float64)
            logits = neg.log_weights - V_neg if neg.self_normalize else neg.log_weights
            if W == 1:
                pi = torch.softmax(logits.detach(), 0)
                surrogate = V_data.mean() - (pi * V_neg).sum()
                mean_v_data = float(V_data.mean().detach())
                gap = mean_v_data - float((pi * V_neg.detach()).sum())
                lse_z = float(torch.logsumexp(neg.log_weights - V_neg.detach(), 0))
                pi_sq = float((pi * pi).sum())
            else:  # π normalised over every rank's negatives; the data term over the batch
                st = global_step_stats(
                    par, V_data, V_neg, neg, bs, info_fields(negatives.last_info)
                )
                pi = torch.exp(logits.detach() - st.log_norm)
                surrogate = V_data.sum() / bs - (pi * V_neg).sum()
                mean_v_data, gap, lse_z, pi_sq = st.mean_v_data, st.gap, st.lse_z, st.pi_sq
            if neg.self_normalize:  # the weighted points estimate Z itself
                nll_est = mean_v_data + lse_z
            else:  # model samples (MCMC) carry no estimate of Z
                nll_est = math.nan
            finite = math.isfinite(gap) and (W > 1 or bool(torch.isfinite(surrogate)))
            finite = finite and (math.isfinite(nll_est) or not neg.self_normalize)
            why = "non-finite loss/energies"
            if finite and abs(gap) > monitor.max_gap:
                finite, why = False, f"energy gap {gap:.4g} beyond max_gap={monitor.max_gap:g}"
        if not finite:
            retries += 1
            if retries > max_retries:
                msg = (
                    f"training diverged at iteration {it} ({why}) and did not "
                    f"recover after {max_retries} restarts with smaller learning rates"
                )
                reason = _give_up(msg, best, history, energy)
                break
            energy.load_state_dict(good_state[0])
            opt.load_state_dict(good_state[1])
            for g in opt.param_groups:
                g["initial_lr"] = g.get("initial_lr", lr) / 2
            sched.base_lrs = [b / 2 for b in sched.base_lrs]
            if hasattr(negatives, "reset"):
                negatives.reset()
            tracker.reset_chains()
            msg = f"divergence ({why}): restored last good state, lr halved"
            history.append({"iter": it, "event": msg})
            warnings.warn(f"iteration {it}: {msg}", FitWarning, stacklevel=2)
            continue
        info = info_fields(getattr(negatives, "last_info", None))
        info["energy_gap"] = gap
        if W > 1:
            info.update(st.info)
        if neg.self_normalize:
            n_pts = pi.numel() if W == 1 else st.n_points
            ess = 1.0 / pi_sq
            info.update(ess=ess, ess_fraction=ess / n_pts)
            info.setdefault("n_points", n_pts)
        for kind, msg in tracker.step(it, info):
            history.append({"iter": it, "warning": kind, "message": msg})
            if monitor.action == "raise":
                bar.close()
                energy.load_state_dict(best["state"])
                raise FitError(f"iteration {it}: {msg}")
            if monitor.action == "warn" and kind not in tracker.warned:
                tracker.warned.add(kind)
                warnings.warn(f"iteration {it}: {msg}", FitWarning, stacklevel=2)
        opt.zero_grad(set_to_none=True)
        surrogate.backward()
        par.all_reduce_grads(energy.parameters())
        opt.step()
        sched.step()
        it += 1
        bar.update(1)
        if it % val_every == 0 or it == max_iter:
            val = validation_nll(energy, U_val, base)
            row = {"iter": it}
            if math.isfinite(nll_est):
                row["train_nll_est"] = nll_est
            row.update(val_nll=val, lr=opt.param_groups[0]["lr"])
            row.update(tracker.summary())
            history.append(row)
            bar.set_postfix(val_nll=f"{val + off:.4f}")
            if not math.isfinite(val):
                retries += 1
                if retries > max_retries:
                    msg = f"validation NLL became non-finite at iteration {it}"
                    reason = _give_up(msg, best, history, energy)
                    break
                energy.load_state_dict(good_state[0])
                opt.load_state_dict(good_state[1])
                continue
            good_state = (copy.deepcopy(energy.state_dict()), copy.deepcopy(opt.state_dict()))
            n_val_done += 1
            if val < best["val"] - 1e-5:
                best = {"val": val, "it": it, "state": copy.deepcopy(energy.state_dict())}
                since_best = 0
            else:
                since_best += 1
                if since_best >= patience:
                    reason = "early_stopping"
                    break
            if checkpoint is not None and it < max_iter and n_val_done % checkpoint.every == 0:
                loop = {"it": it, "best": best, "history": history, "retries": retries}
                loop.update(since_best=since_best, n_val=n_val_done, finished=False, reason="")
                save_state(checkpoint, par, cfg, loop, objs)
    bar.close()
    energy.load_state_dict(best["state"])
    if checkpoint is not None:
        loop = {"it": it, "best": best, "history": history, "retries": retries}
        loop.update(since_best=since_best, n_val=n_val_done, finished=True, reason=reason)
        save_state(checkpoint, par, cfg, loop, objs)
    return FitResult(it, best["val"], best["it"], reason, history, tracker.events)
