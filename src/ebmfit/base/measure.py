r"""The base-measure interface and the uniform base.

A model is :math:`Q_V = e^{-V}\,dP / \mathbb{E}_P[e^{-V}]`.  A base :math:`P` exposes its
log-density with respect to Lebesgue measure on :math:`[0,1]^d` (``log_prob``), an exact
sampler (``sample``) and its serialised form: a JSON-able ``to_dict()`` plus, for bases with
many parameters, named tensors (``tensors()``) that travel in the model file's safetensors
payload.  Nothing is pickled.
"""

from __future__ import annotations

import torch

__all__ = ["BaseMeasure", "Uniform"]


class BaseMeasure:
    """Interface: ``log_prob(u)`` of shape (n,) for u of shape (n, d); ``sample(n, generator)``.

    A base either implements :meth:`_draw` (float64 draws on the generator's device) and
    inherits :meth:`sample`, or overrides :meth:`sample` itself.
    """

    dim: int
    #: Whether a draw costs much more than a density evaluation (a flow's sequential
    #: inverse): importance negatives then keep a pool and refresh part of it per step.
    costly_draws: bool = False

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """``n`` exact draws, shape (n, d), in the cube; deterministic given ``generator``.

        The draws are made in float64 on the generator's device (the CPU without one) by
        :meth:`_draw`, then cast to ``dtype`` and moved to ``device`` (default: the
        generator's device); ``n == 0`` draws nothing.
        """
        n = int(n)
        gdev = generator.device if generator is not None else torch.device("cpu")
        device = device if device is not None else gdev
        if n == 0:
            return torch.empty(0, self.dim, dtype=dtype, device=device)
        return self._draw(n, generator, gdev).to(dtype=dtype, device=device)

    def _draw(
        self, n: int, generator: torch.Generator | None, gdev: torch.device
    ) -> torch.Tensor:  # pragma: no cover - interface
        """``n >= 1`` exact draws, float64 of shape (n, d), made with ``generator`` on ``gdev``
        (the tensor may come back on the CPU: :meth:`sample` moves it)."""
        raise NotImplementedError

    def to_dict(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def tensors(self) -> dict[str, torch.Tensor]:
        """Named parameter tensors stored beside ``to_dict()`` in a model file (default none)."""
        return {}


class Uniform(BaseMeasure):
    r"""The uniform (Lebesgue) measure on :math:`[0,1]^d`: :math:`\log dP/du = 0` inside."""

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        inside = ((u >= 0) & (u <= 1)).all(dim=-1)
        zero = torch.zeros(u.shape[:-1], dtype=u.dtype, device=u.device)
        return torch.where(inside, zero, torch.full_like(zero, -torch.inf))

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """``n`` uniform draws made directly in ``dtype`` on ``device`` (default: the
        generator's device, else torch's default device)."""
        device = (
            device if device is not None else (generator.device if generator is not None else None)
        )
        return torch.rand(n, self.dim, generator=generator, dtype=dtype, device=device)

    def to_dict(self) -> dict:
        return {"kind": "uniform", "dim": self.dim}

    def __repr__(self) -> str:
        return f"Uniform(dim={self.dim})"
