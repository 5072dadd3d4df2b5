"""Progress output in non-interactive runs: plain lines, never bare ``\\r`` frames, and the
validation NLL in the user's units (the unit-cube NLL plus the box's log-volume)."""

from __future__ import annotations

import io
import re

import numpy as np
import torch
from typer.testing import CliRunner

from ebmfit.cli import app
from ebmfit.energies import LegendreEnergy
from ebmfit.training import fit_convex
from ebmfit.training._progress import Progress, progress_bar


def test_lines_not_frames_when_not_a_terminal():
    out = io.StringIO()  # not a tty
    bar = progress_bar(Progress(every=0.0), total=3, desc="fit", stream=out)
    for _ in range(3):
        bar.update(1)
    bar.set_postfix(val_nll="1.2345")
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    assert text.splitlines()[-1].startswith("fit: 3/3 [") and "val_nll=1.2345" in text
    assert list(progress_bar(False, iterable=[1, 2], desc="x")) == [1, 2]


def test_validation_nll_is_shown_in_the_users_units(capsys):
    rng = np.random.default_rng(0)
    U = torch.as_tensor(np.clip(rng.normal(0.5, 0.15, (200, 1)), 0, 1))
    e = LegendreEnergy(1, degree=6)
    res = fit_convex(e, U[:150], U[150:], max_iter=20, progress=Progress(nll_offset=10.0))
    err = capsys.readouterr().err
    shown = [float(v) for v in re.findall(r"val_nll=(-?[\d.]+)", err)]
    assert shown, err
    last = [h["val_nll"] for h in res.history if "val_nll" in h][-1]
    assert abs(shown[-1] - (last + 10.0)) < 1e-4


def test_cli_fit_progress_in_a_log(tmp_path):
    rng = np.random.default_rng(0)
    X = 2 + 3 * np.clip(rng.normal(0.5, 0.15, (80, 2)), 0, 1)
    data = tmp_path / "d.csv"
    data.write_text("\n".join(",".join(repr(float(v)) for v in r) for r in X) + "\n")
    args = ["fit", str(data), "-o", str(tmp_path / "m.ebm"), "--energy", "legendre"]
    res = CliRunner().invoke(app, [*args, "--max-iter", "3"])
    assert res.exit_code == 0, res.output
    assert "\r" not in res.stderr
    assert re.search(r"penalty path: \d+/\d+ \[\d+s\]", res.stderr), res.stderr
