"""One result type for every log Z estimator (issue 9, item 5).

Every ``log_partition_*`` function of :mod:`ebmfit.partition` and
:mod:`ebmfit.training.distributed` returns a :class:`LogZ` whose ``diagnostics`` field has the
type documented in :mod:`ebmfit.partition.result`; the diagnostics are neither compared nor
written to files.  A new estimator without an entry in ``CASES`` fails the coverage test.
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch

import ebmfit.partition as P
import ebmfit.training.distributed as D
from ebmfit import Box, EnergyModel
from ebmfit.energies import QuadraticEnergy, ZeroEnergy
from ebmfit.partition import (
    AISDiagnostics,
    ISDiagnostics,
    LogZ,
    QMCDiagnostics,
    QuadratureDiagnostics,
)
from ebmfit.samplers.exact import sample_exact

E2 = QuadraticEnergy(2, mean=torch.tensor([0.4, 0.6]), precision=20.0 * torch.eye(2))
AIS = {"n_temps": 4, "n_pilot": 4}
NOT_ESTIMATORS = {"log_partition_rule"}  # returns the name of a rule


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reverse() -> LogZ:
    x, _ = sample_exact(E2, 16, generator=gen(1))
    return P.log_partition_reverse_ais(E2, x, generator=gen(2), **AIS)


def _ctx() -> D.ParallelContext:
    return D.current_context("cpu")


CASES = {
    "log_partition": (lambda: P.log_partition(E2), QuadratureDiagnostics),
    "log_partition_quadrature": (lambda: P.log_partition_quadrature(E2), QuadratureDiagnostics),
    "log_partition_qmc": (
        lambda: P.log_partition_qmc(E2, n_points=256, n_rep=4, random_state=0),
        QMCDiagnostics,
    ),
    "log_partition_importance": (
        lambda: P.log_partition_importance(E2, n_samples=256, n_batches=2, generator=gen()),
        ISDiagnostics,
    ),
    "log_partition_ais": (
        lambda: P.log_partition_ais(E2, n_chains=16, generator=gen(), **AIS),
        AISDiagnostics,
    ),
    "log_partition_reverse_ais": (_reverse, AISDiagnostics),
    "log_partition_distributed": (
        lambda: D.log_partition_distributed(E2, ctx=_ctx(), method="importance"),
        ISDiagnostics,
    ),
    "log_partition_quadrature_distributed": (
        lambda: D.log_partition_quadrature_distributed(E2, ctx=_ctx()),
        QuadratureDiagnostics,
    ),
    "log_partition_qmc_distributed": (
        lambda: D.log_partition_qmc_distributed(E2, ctx=_ctx(), n_points=256, n_rep=4),
        QMCDiagnostics,
    ),
    "log_partition_importance_distributed": (
        lambda: D.log_partition_importance_distributed(E2, ctx=_ctx(), n_samples=256),
        ISDiagnostics,
    ),
    "log_partition_ais_distributed": (
        lambda: D.log_partition_ais_distributed(E2, ctx=_ctx(), n_chains=16, n_blocks=2, **AIS),
        AISDiagnostics,
    ),
}


def test_every_log_partition_function_is_covered():
    names = {
        n
        for mod in (P, D)
        for n in mod.__all__
        if n.startswith("log_partition") and callable(getattr(mod, n))
    }
    assert names - NOT_ESTIMATORS == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_returns_a_logz_with_its_documented_diagnostics(name):
    call, kind = CASES[name]
    lz = call()
    assert type(lz) is LogZ and type(lz.diagnostics) is kind
    assert math.isfinite(float(lz)) and lz.value == float(lz) and lz.stderr >= 0
    assert lz.bias in ("none", "lower", "upper") and lz.n_evals > 0
    # the file form is the estimate without its diagnostics; equality ignores them
    d = lz.to_dict()
    assert set(d) == {"value", "stderr", "method", "n_evals", "bias"}
    back = LogZ.from_dict(d)
    assert back.diagnostics is None and back == lz and hash(back) == hash(lz)
    assert pickle.loads(pickle.dumps(lz)) == lz


def test_exact_rule_and_a_file_estimate_carry_no_diagnostics():
    lz = P.log_partition(ZeroEnergy(4))
    assert lz == LogZ(0.0, 0.0, "exact", 0, "none") and lz.diagnostics is None
    assert EnergyModel(ZeroEnergy(4), Box.unit(4)).log_partition().diagnostics is None


def test_quadrature_diagnostics_hold_both_levels_and_the_check():
    lz = P.log_partition_quadrature(E2)
    g = lz.diagnostics
    assert g.levels[1] == pytest.approx(lz.value, abs=max(lz.stderr, 1e-12))
    assert abs(g.levels[1] - g.levels[0]) <= lz.stderr + 1e-15
    held = lz.stderr + g.adaptive_error + 1e-10 * (1 + abs(lz.value))  # the check's criterion
    assert g.converged is True and abs(g.adaptive - lz.value) <= held
    unchecked = P.log_partition_quadrature(E2, check=False).diagnostics
    assert unchecked.adaptive is None and unchecked.converged is None


def test_qmc_diagnostics_reproduce_the_estimate():
    lz = P.log_partition_qmc(E2, n_points=256, n_rep=8, random_state=3)
    r = torch.as_tensor(lz.diagnostics.replicate_logz)
    assert r.shape == (8,) and lz.diagnostics.n_points == 256
    assert float(torch.logsumexp(r, 0)) - math.log(8) == pytest.approx(lz.value, abs=1e-12)
