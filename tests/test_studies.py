"""Every study runs at reduced size and asserts the statement it illustrates."""

from __future__ import annotations

import math

import pytest

from ebmfit.studies import (
    STUDIES,
    approximation_study,
    errata_study,
    identity_study,
    run_study,
    zeros_study,
)


def test_errata_counterexample_and_corrected_inequality(tmp_path):
    r = errata_study(quick=True)
    # KL(A||C) exceeds KL(A||B) + KL(B||C) by more than a nat: no triangle inequality
    assert r.triangle_defect > 1.0
    # the corrected step holds on the same numbers, with the oscillation certified
    assert r.osc_bc[0] <= r.osc_bc[1]
    assert r.kl_ac <= r.kl_ab + r.osc_bc[1]
    assert r.claim_holds
    # (a): the Hoeffding bound is below the seed's 2||h||, and both are above the exact KL
    for _pair, kl, seed_bound, osc, hoeffding in r.bound_a_rows:
        assert kl <= hoeffding <= osc <= seed_bound + 1e-12
    # (b): the seed's sign (V = +ln q) gives a far-away law
    assert r.kl_wrong_sign > 1.0
    md, png = (tmp_path / "errata.md"), (tmp_path / "errata.png")
    r.plot(png)
    md.write_text(r.to_markdown())
    assert png.stat().st_size > 1000 and "triangle" in md.read_text()


def test_identity_gradient_estimators_agree_with_autograd():
    r = identity_study(quick=True)
    assert r.row("quadrature, same rule").rel_error < 1e-10  # the identity, to round-off
    assert r.row("quadrature, finer rule").rel_error < 1e-4  # quadrature error only
    stochastic = [row for row in r.rows if row.predicted_rel_se > 0]
    assert len(stochastic) >= 3  # two importance-sampling sizes and MALA
    for row in stochastic:
        # |error| / s.e.: for a Gaussian error vector, P(ratio > 5) < 1e-6 even if all
        # components are perfectly correlated (chi-square with one degree of freedom)
        assert row.ratio < 5.0, row
    is_rows = [row for row in stochastic if row.estimator.startswith("importance")]
    assert is_rows[1].predicted_rel_se < is_rows[0].predicted_rel_se / 2  # ~1/sqrt(m)
    assert r.claim_holds


def test_approximation_kl_falls_with_capacity_and_bounds_hold():
    r = approximation_study(quick=True)
    for fam in ("legendre", "spline"):
        ladder = r.ladder(fam)
        assert len(ladder) >= 3
        assert r.decreasing(fam)
        assert ladder[-1].kl < ladder[0].kl / 5
    assert r.bounds_hold
    assert all(math.isfinite(x.kl_bound) for x in r.rungs)


def test_zeros_mixtures_bounds_and_fits_through_them():
    r = zeros_study(quick=True)
    for row in r.rows:
        assert row.kl_star_n <= row.bound_log and row.kl_star_n <= row.bound_conv
        assert row.kl_star_r <= row.corrected
    assert r.fits_approach_target
    assert r.rows[-1].kl_star_r < r.rows[0].kl_star_r / 10
    assert r.claim_holds


def test_run_study_writes_report_and_rejects_unknown_names(tmp_path):
    assert set(STUDIES) == {"identity", "approximation", "zeros", "errata"}
    run_study("identity", quick=True, out_dir=tmp_path)
    assert (tmp_path / "identity.md").read_text().startswith("# The gradient identity")
    assert (tmp_path / "identity.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="unknown study"):
        run_study("nope")
