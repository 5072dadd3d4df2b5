"""Resources a small input must not exhaust: ``sample`` and ``plot`` in high dimension.

The exact sampler's envelope bisects a box along all axes into 2^d children; the table of
2^d corners was built up front, so a 24- to 30-D model needed 6–24 GB before drawing a single
point.  Two checks of the mechanism, neither a timing assertion:

* no call ever materialises a 2^d table: ``torch.cartesian_prod`` is wrapped to refuse any
  product of more than 2^16 rows while ``sample`` and ``plot`` run at d = 24 and d = 40;
* the peak resident memory of ``ebmfit sample`` + ``ebmfit plot`` on a 40-D model, measured in
  a fresh subprocess (``ru_maxrss`` after minus before), stays under a small budget.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

import ebmfit.io as eio
from ebmfit import Box, EnergyModel
from ebmfit.cli import app
from ebmfit.energies import MLPEnergy, QuadraticEnergy

BUDGET_MB = 600  # far below the 6-24 GB of the 2^d table, far above the ~100 MB needed


def _model(d: int, kind: str) -> EnergyModel:
    if kind == "quadratic":
        energy = QuadraticEnergy(d, mean=torch.full((d,), 0.5), precision=30 * torch.eye(d))
    else:
        energy = MLPEnergy(d, hidden=(16,), n_fourier=8, seed=0)
    model = EnergyModel(energy, Box([0.0] * d, [1.0] * d))
    model.log_partition(random_state=0)
    return model


@pytest.mark.parametrize("kind", ["quadratic", "mlp"])
@pytest.mark.parametrize("d", [24, 40])
def test_no_two_to_the_d_table(tmp_path, monkeypatch, d, kind):
    real = torch.cartesian_prod

    def guarded(*tensors):
        rows = math.prod(t.numel() for t in tensors)
        assert rows <= 2**16, f"cartesian_prod of {rows} rows (a 2^d table) at d={d}"
        return real(*tensors)

    monkeypatch.setattr(torch, "cartesian_prod", guarded)
    path = tmp_path / "m.ebm"
    eio.save_model(_model(d, kind), path)
    runner = CliRunner()
    res = runner.invoke(app, ["sample", str(path), "-n", "500", "-o", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "sampling:" in res.stdout
    res = runner.invoke(app, ["plot", str(path), "-o", str(tmp_path / "p.png")])
    assert res.exit_code == 0, (res.output, res.exception)
    assert (tmp_path / "p.png").stat().st_size > 5000


SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    from typer.testing import CliRunner
    import ebmfit.io as eio
    from ebmfit import Box, EnergyModel
    from ebmfit.cli import app
    from ebmfit.energies import QuadraticEnergy
    from ebmfit.plotting import plot_density  # import everything before the baseline

    torch.set_num_threads(1)
    d, out = 40, sys.argv[1]
    energy = QuadraticEnergy(d, mean=torch.full((d,), 0.5), precision=30 * torch.eye(d))
    model = EnergyModel(energy, Box([0.0] * d, [1.0] * d))
    model.log_partition(random_state=0)
    eio.save_model(model, out + "/m.ebm")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = CliRunner()
    a = r.invoke(app, ["sample", out + "/m.ebm", "-n", "20000", "-o", out + "/s.csv"])
    b = r.invoke(app, ["plot", out + "/m.ebm", "-o", out + "/p.png"])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(a.exit_code, b.exit_code, (after - before) / 1024)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_peak_memory_of_sample_and_plot_at_d40(tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    rc_sample, rc_plot, grown_mb = res.stdout.split()[-3:]
    assert (rc_sample, rc_plot) == ("0", "0"), res.stdout
    assert float(grown_mb) < BUDGET_MB, f"sample + plot at d=40 grew the peak RSS by {grown_mb} MB"
