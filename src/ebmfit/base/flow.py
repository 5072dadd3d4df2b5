r""":class:`FlowBase`: a neural spline flow in logit coordinates (``pip install ebmfit[flows]``).

With :math:`y = \operatorname{logit}(u)` standardized, :math:`z = (y - m)/s`, and a zuko
neural spline flow :math:`q_\phi(z)` (Durkan et al., *Neural Spline Flows*, NeurIPS 2019),

.. math:: p(u) = w_0 + (1 - w_0)\, q_\phi\big((\operatorname{logit} u - m)/s\big)
          \prod_j \frac{1}{s_j\, u_j (1 - u_j)},

exactly normalized on the cube (a change of variables of a normalized flow, mixed with the
uniform), with an exact sampler: :math:`\varepsilon \sim \mathcal N(0, I)` drawn from the
caller's generator, :math:`z = T^{-1}(\varepsilon)`, :math:`u = \operatorname{expit}(m + s z)`.

:meth:`FlowBase.fit` trains by maximum likelihood (Adam, mini-batches) with early stopping on
the validation rows and keeps the best state.  The estimator uses it only where it beats the
logit-GMM base on validation (``EnergyDensity(base="flow")``).
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch

from .logit_gmm import LogitGMMBase, logit
from .measure import BaseMeasure

__all__ = ["FlowBase"]

_EPS = 2.0**-53
#: Above this dimension :meth:`FlowBase.fit` builds coupling transforms (fast inverse).
AUTOREGRESSIVE_MAX_DIM = 8
#: Entries (rows × d) pushed through the flow at once (:meth:`FlowBase.sample`,
#: :meth:`FlowBase.log_prob`; see :func:`chunk_rows`).
CHUNK_ENTRIES = 32768


def chunk_rows(dim: int) -> int:
    """Rows per pass through the flow: ``CHUNK_ENTRIES // dim`` clipped to [512, 8192].

    The conditioners' outputs grow as rows × d × bins, and the allocator keeps freed blocks
    of that size: a 64-D coupling flow drawing and scoring 8192 rows at a time, ten times
    over, grew the process to 7.4 GB, in chunks of 512 rows to 1.2 GB; the small chunks
    were also faster (16 384 draws at 64-D: 6.5 s → 2.4 s; at 16-D, autoregressive:
    8.6 s → 5.2 s in chunks of 2048; at 7-D the same time above 2048 rows).
    """
    return max(512, min(8192, CHUNK_ENTRIES // max(int(dim), 1)))


#: Validation rows read by the early stopping of :meth:`FlowBase.fit` (at most).
STOP_ROWS = 4096


def _zuko():
    try:
        import zuko
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "base='flow' needs zuko: pip install 'ebmfit[flows]' (or pip install zuko)"
        ) from e
    return zuko


class FlowBase(BaseMeasure):
    """Neural spline flow on standardized logit coordinates (see the module docstring).

    Args:
        dim: d.
        mean, scale: the standardization m, s of logit(u), shape (d,).
        transforms: number of autoregressive spline transforms.
        hidden: hidden widths of each transform's conditioner.
        passes: sequential passes of each transform's inverse (the sampler's cost): None is
            fully autoregressive (d passes), 2 a coupling transform (two halves).
        uniform_weight: :math:`w_0 \\in [0, 1)`.
        state: the flow's ``state_dict`` (None: a fresh flow, seeded by ``seed``).
    """

    costly_draws = True

    def __init__(
        self,
        dim: int,
        mean: np.ndarray,
        scale: np.ndarray,
        *,
        transforms: int = 3,
        hidden: tuple[int, ...] = (64, 64),
        passes: int | None = None,
        uniform_weight: float = 1e-3,
        state: dict | None = None,
        seed: int = 0,
    ) -> None:
        zuko = _zuko()
        self.dim = int(dim)
        self.transforms = int(transforms)
        self.hidden = tuple(int(h) for h in hidden)
        if passes is not None and not 2 <= int(passes) <= self.dim:
            raise ValueError(f"passes must be None or in [2, {self.dim}], got {passes}")
        self.passes = None if passes is None else int(passes)
        self.uniform_weight = float(uniform_weight)
        if not 0.0 <= self.uniform_weight < 1.0:
            raise ValueError(f"uniform_weight must be in [0, 1), got {uniform_weight}")
        self.mean = np.asarray(mean, dtype=np.float64).reshape(self.dim)
        self.scale = np.asarray(scale, dtype=np.float64).reshape(self.dim)
        if not (np.all(np.isfinite(self.mean)) and np.all(self.scale > 0)):
            raise ValueError("mean must be finite and scale positive")
        with torch.random.fork_rng(devices=[]):  # zuko draws its init from the global RNG:
            self.flow = zuko.flows.NSF(  # leave that state as it was, and redraw below
                self.dim,
                transforms=self.transforms,
                hidden_features=self.hidden,
                passes=self.passes,
            ).double()
        if state is not None:
            self.flow.load_state_dict(_with_structure(self.flow, state))
        else:
            _seeded_init(self.flow, torch.Generator().manual_seed(int(seed)))
        self.flow.eval()
        self.flow.requires_grad_(False)  # a fitted base is fixed: no graph through it

    # ------------------------------------------------------------------ density
    def _std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
        return t(self.mean), t(self.scale)

    def _standardize(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = (logit(u) − m)/s, shape (n, d), and log|dz/du|, shape (n,), for float64 u in
        the cube (clamped to [2⁻⁵³, 1 − 2⁻⁵³] as :func:`logit` does)."""
        m, s = self._std(u.device)
        uc = u.clamp(_EPS, 1.0 - _EPS)
        lo, hi = torch.log(uc), torch.log1p(-uc)
        return (lo - hi - m) / s, -(lo + hi).sum(-1) - torch.log(s).sum()

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """Exact log p(u), shape (n,) for u of shape (n, d); −inf outside the cube."""
        out_dt = u.dtype if u.dtype.is_floating_point else torch.float64
        uu = u.to(torch.float64)
        if uu.shape[0] == 0:
            return torch.empty(0, dtype=out_dt, device=uu.device)
        self.flow.to(uu.device)
        z, log_jac = self._standardize(uu)
        dist = self.flow()
        chunks = z.split(chunk_rows(self.dim))  # bounded memory
        lg = torch.cat([dist.log_prob(c) for c in chunks]) + log_jac
        if self.uniform_weight > 0:
            lg = torch.logaddexp(
                math.log1p(-self.uniform_weight) + lg,
                torch.full_like(lg, math.log(self.uniform_weight)),
            )
        inside = ((uu >= 0) & (uu <= 1)).all(dim=-1)
        return torch.where(inside, lg, torch.full_like(lg, -torch.inf)).to(out_dt)

    @torch.no_grad()
    def _draw(self, n: int, generator: torch.Generator | None, gdev: torch.device) -> torch.Tensor:
        """Flow draws pushed through the sigmoid, each replaced by a uniform one with
        probability ``uniform_weight``."""
        self.flow.to(gdev)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64, device=gdev)
        flat = torch.rand(n, self.dim, generator=generator, dtype=torch.float64, device=gdev)
        pick = torch.rand(n, generator=generator, dtype=torch.float64, device=gdev)
        inv = self.flow().transform.inv
        z = torch.cat([inv(e) for e in eps.split(chunk_rows(self.dim))])  # bounded intermediates
        m, s = self._std(gdev)
        u = torch.sigmoid(m + s * z)
        return torch.where((pick < self.uniform_weight)[:, None], flat, u)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        U: np.ndarray | torch.Tensor,
        U_val: np.ndarray | torch.Tensor,
        *,
        transforms: int = 3,
        hidden: tuple[int, ...] = (64, 64),
        passes: int | str | None = "auto",
        lr: float = 3e-3,
        batch_size: int = 256,
        max_steps: int = 5000,
        val_every: int = 25,
        patience: int = 20,
        time_limit: float = 300.0,
        max_val_rows: int = STOP_ROWS,
        uniform_weight: float = 1e-3,
        train_dtype: torch.dtype = torch.float32,
        cosine: bool = True,
        random_state: int | None = 0,
    ) -> FlowBase:
        r"""Maximum likelihood with Adam, early stopping on ``U_val``; the best state is kept.

        Training stops after ``patience`` checks without improvement, ``max_steps`` steps or
        ``time_limit`` seconds, whichever comes first.  Early stopping reads at most
        ``max_val_rows`` of the validation rows (a fixed random subset: the check is then
        cheap beside the steps).  ``passes="auto"``: fully autoregressive up to
        :data:`AUTOREGRESSIVE_MAX_DIM` dimensions, a coupling transform (2 passes, so that
        drawing costs two conditioner evaluations per transform instead of d) above.  The
        learning rate decays from ``lr`` to 0 over ``max_steps`` by a cosine when ``cosine``,
        :math:`\eta_s = \tfrac{\eta}{2}(1 + \cos(\pi (s-1)/H))` for steps s = 1 … H; where the
        pace measured at the validation checks would let the clock cut the decay short, the
        horizon H is set to the steps that fit in 90 % of ``time_limit`` (recorded in
        ``fit_info["horizon"]``: a truncated decay ends at a high learning rate).  The steps
        run in ``train_dtype`` and the kept flow is float64; a non-finite loss ends the
        training (the best state so far is kept).
        """
        Ut = torch.as_tensor(np.asarray(_np(U)), dtype=torch.float64)
        Uv = torch.as_tensor(np.asarray(_np(U_val)), dtype=torch.float64)
        d = Ut.shape[1]
        if passes == "auto":
            passes = None if d <= AUTOREGRESSIVE_MAX_DIM else 2
        Y = logit(Ut)
        mean, scale = Y.mean(0).numpy(), (Y.std(0) + 1e-6).numpy()
        seed = 0 if random_state is None else int(random_state) % (2**31)
        base = cls(
            d,
            mean,
            scale,
            transforms=transforms,
            hidden=hidden,
            passes=passes,
            uniform_weight=uniform_weight,
            seed=seed,
        )
        g = torch.Generator().manual_seed(seed)
        if Uv.shape[0] > max_val_rows:
            Uv = Uv[torch.randperm(Uv.shape[0], generator=g)[:max_val_rows]]
        # train on the standardized logits in ``train_dtype`` (the log-Jacobian and the
        # uniform mixture do not depend on the weights); the kept flow is float64 again
        Z = base._standardize(Ut)[0].to(train_dtype)
        Zv, jac_v = base._standardize(Uv)
        Zv = Zv.to(train_dtype)
        flow = base.flow.to(train_dtype).train().requires_grad_(True)
        opt = torch.optim.Adam(flow.parameters(), lr=lr)
        horizon = max(int(max_steps), 1)  # the cosine's length; shrunk if the clock binds
        log_w0 = math.log(uniform_weight) if uniform_weight > 0 else -math.inf

        def val_loss() -> float:
            # the NLL of the base that is kept (the flow mixed with the uniform on the cube),
            # not of the bare flow: a validation row off a column the flow made sharp costs
            # at most −log w₀ there, as it does in the selection that judges the base
            with torch.no_grad():
                lq = torch.cat([flow().log_prob(c) for c in Zv.split(chunk_rows(d))]).double()
                lp = torch.logaddexp(
                    math.log1p(-uniform_weight) + lq + jac_v, torch.full_like(lq, log_w0)
                )
                return -float(lp.mean())

        best, best_state, bad, t0 = val_loss(), copy.deepcopy(flow.state_dict()), 0, time.time()
        step = 0
        for step in range(1, max_steps + 1):
            if cosine:  # lr at this step of a cosine decay from lr to 0 over the horizon
                for group in opt.param_groups:
                    group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * (step - 1) / horizon))
            idx = torch.randint(0, Z.shape[0], (min(batch_size, Z.shape[0]),), generator=g)
            loss = -flow().log_prob(Z[idx]).mean()
            if not torch.isfinite(loss):  # diverged: keep the best state so far
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % val_every == 0 or step >= horizon:  # and the end of the decay
                v = val_loss()
                if v < best - 1e-4:
                    best, best_state, bad = v, copy.deepcopy(flow.state_dict()), 0
                else:
                    bad += 1
                elapsed = time.time() - t0
                if bad >= patience or elapsed > time_limit:
                    break
                # where the clock would cut the schedule before its end (a loaded machine),
                # set the decay's length to the steps that fit in 90 % of the limit at the pace
                # so far (re-estimated at every check before the end), so that the flow still
                # anneals
                if cosine and math.isfinite(time_limit) and step < horizon:
                    fits = int(0.9 * time_limit * step / max(elapsed, 1e-9))
                    horizon = max(step, min(int(max_steps), fits))
            if step >= horizon:
                break
        flow.double()
        base.flow.load_state_dict(best_state)  # copied into the float64 weights
        base.flow.eval()
        base.flow.requires_grad_(False)
        with torch.no_grad():  # the exact validation NLL of the kept (float64) base
            best = -float(base.log_prob(Uv).mean())
        base.val_nll = best
        base.fit_info = {
            "steps": step,
            "horizon": horizon,
            "seconds": time.time() - t0,
            "val_nll": best,
        }
        return base

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "kind": "flow",
            "dim": self.dim,
            "transforms": self.transforms,
            "hidden": list(self.hidden),
            "passes": self.passes,
            "uniform_weight": self.uniform_weight,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """The flow's weights (its integer masks and orders are rebuilt from the spec)."""
        out = {
            f"flow.{k}": v.detach().cpu()
            for k, v in self.flow.state_dict().items()
            if v.is_floating_point()
        }
        out["mean"] = torch.as_tensor(self.mean)
        out["scale"] = torch.as_tensor(self.scale)
        return out

    @classmethod
    def from_parts(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> FlowBase:
        """Rebuild from :meth:`to_dict` and :meth:`tensors` (state shapes checked by torch)."""
        d = int(spec["dim"])
        for name in ("mean", "scale"):
            if name not in tensors or tuple(tensors[name].shape) != (d,):
                raise ValueError(f"flow base: tensor {name!r} missing or not of shape ({d},)")
        state = {k[5:]: v for k, v in tensors.items() if k.startswith("flow.")}
        return cls(
            d,
            tensors["mean"].double().numpy(),
            tensors["scale"].double().numpy(),
            transforms=int(spec["transforms"]),
            hidden=tuple(int(h) for h in spec["hidden"]),
            passes=spec.get("passes"),
            uniform_weight=float(spec.get("uniform_weight", 0.0)),
            state=state,
        )

    def __repr__(self) -> str:
        return (
            f"FlowBase(dim={self.dim}, transforms={self.transforms}, hidden={self.hidden}, "
            f"passes={self.passes})"
        )


def _with_structure(flow: torch.nn.Module, state: dict) -> dict:
    """``state``'s weights over ``flow``'s own masks and orders (non-floating buffers, fixed by
    the architecture: never taken from a file); every weight must be there, nothing else."""
    own = flow.state_dict()
    fixed = {k: v for k, v in own.items() if not v.is_floating_point()}
    missing = sorted(k for k in own if k not in fixed and k not in state)
    unknown = sorted(k for k in state if k not in own)
    if missing or unknown:
        raise ValueError(
            f"flow base: tensors missing {missing[:3]} or unknown {unknown[:3]} for this "
            "architecture"
        )
    return {**{k: v for k, v in state.items() if k not in fixed}, **fixed}


@torch.no_grad()
def _seeded_init(flow: torch.nn.Module, g: torch.Generator) -> None:
    """PyTorch's default Linear init, U(±1/sqrt(fan_in)), drawn from ``g``."""
    for mod in flow.modules():
        if isinstance(mod, torch.nn.Linear):
            b = 1.0 / math.sqrt(mod.in_features)
            mod.weight.copy_(
                torch.rand(mod.weight.shape, generator=g, dtype=torch.float64) * 2 * b - b
            )
            if mod.bias is not None:
                mod.bias.copy_(
                    torch.rand(mod.bias.shape, generator=g, dtype=torch.float64) * 2 * b - b
                )


def _np(U: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(U, torch.Tensor):
        return U.detach().cpu().numpy()
    return np.asarray(U, dtype=np.float64)


def better_of(flow: FlowBase, gmm: LogitGMMBase, U_val: np.ndarray | torch.Tensor) -> BaseMeasure:
    """The flow only where it wins on the validation rows (mean log-likelihood)."""
    Uv = torch.as_tensor(_np(U_val), dtype=torch.float64)
    with torch.no_grad():
        lf = float(flow.log_prob(Uv).mean())
        lg = float(gmm.log_prob(Uv).mean())
    return flow if lf > lg else gmm
