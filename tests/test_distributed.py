"""One fit loop on one and on N processes, log Z across ranks, checkpoints and failures.

Multi-process tests launch this very file as the worker script under
``python -m torch.distributed.run --nproc-per-node 2`` (gloo on 127.0.0.1, one thread per
rank, a hard timeout on every launch) and compare with single-process runs of the *same*
functions here: ``fit_sgd``/``fit_convex``/``EnergyDensity.fit`` with a
:class:`~ebmfit.training.parallel.ParallelContext` (issue 9, item 1: there is no second loop;
one process and N processes fit the same model, where before ``--nproc`` fitted another one).

Tolerances: parameters after T Adam steps are compared to T·lr·δ/ε with δ = 1e-14 (Adam's
step g/(√v̂ + ε) has derivative up to 1/ε in g, so gradients that agree to δ — float64 sums in
another order — give parameters that agree to lr·δ/ε per step); the convex fit to 1e-9.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer

from ebmfit import EnergyDensity
from ebmfit.base import Uniform
from ebmfit.checkpoint import CheckpointError, RunCheckpoint, load_checkpoint, save_checkpoint
from ebmfit.energies import MLPEnergy, SplineEnergy
from ebmfit.partition.qmc import log_partition_qmc
from ebmfit.partition.quadrature import log_partition_quadrature
from ebmfit.training import (
    ImportanceNegatives,
    PersistentChains,
    ShiftedGridNegatives,
    fit_convex,
    fit_sgd,
    validation_nll,
)
from ebmfit.training.distributed import (
    current_context,
    log_mean_exp_distributed,
    log_partition_ais_distributed,
    log_partition_distributed,
    log_partition_importance_distributed,
    log_partition_qmc_distributed,
    log_partition_quadrature_distributed,
    shard_rows,
    validation_nll_distributed,
)
from ebmfit.training.parallel import (
    ParallelContext,
    init_parallel,
    partition_range,
    shutdown_parallel,
    step_seed,
)

HERE = Path(__file__).resolve()
DIM, GRID, STEPS, LR, BATCH, SEED = 2, 16, 8, 1e-2, 96, 3
VAL_EVERY = 2
ADAM_EPS = 1e-8
PARAM_TOL = STEPS * LR * 1e-14 / ADAM_EPS
LAUNCH_TIMEOUT = 240
AIS_KW = {"n_chains": 32, "n_blocks": 4, "seed": 2, "n_temps": 8, "n_pilot": 8}


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    U = torch.rand(300, DIM, generator=g, dtype=torch.float64) ** 2
    return U[:240], U[240:]


def make_energy() -> MLPEnergy:
    return MLPEnergy(DIM, hidden=(16, 16), n_fourier=4, seed=1, dtype=torch.float64)


def run_sgd(energy, negatives, ctx=None, checkpoint=None, max_iter=STEPS):
    U, Uv = make_data()
    return fit_sgd(
        energy, U, Uv, negatives, max_iter=max_iter, lr=LR, batch_size=BATCH,
        val_every=VAL_EVERY, patience=10**6, generator=torch.Generator().manual_seed(SEED),
        parallel=ctx, checkpoint=None if checkpoint is None else checkpoint.section(),
    )  # fmt: skip


def run_convex(ctx=None):
    U, Uv = make_data()
    e = SplineEnergy(DIM, n_basis=12)
    fit_convex(e, U, Uv, lambdas=[1e-2, 1e-3, 1e-4], parallel=ctx)
    return e.coef.detach().clone()


X4 = np.random.default_rng(4).normal(size=(200, 4))
EST_KW = {"random_state": 0, "selection": "none", "max_iter": 6}


def params(energy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in energy.parameters()]


def max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


class _Kill(Exception):
    pass


class KilledAfter(RunCheckpoint):
    """A checkpoint whose run is killed right after its ``n``-th write (like a preemption)."""

    def __init__(self, path, n, **kw):
        super().__init__(path, **kw)
        self.left = n

    def write(self):
        super().write()
        self.left -= 1
        if self.left == 0:
            raise _Kill


# ============================================================================ launching
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", GLOO_SOCKET_IFNAME="lo")
    return env


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "--max-restarts",
        "0",
        str(HERE),
        *args,
    ]
    return subprocess.run(
        cmd, env=_child_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT
    )


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )


# ============================================================================ worker side
def _worker(argv: list[str]) -> None:
    """``suite OUT DIR`` on 2 ranks: the same fits as one process; an interrupted checkpointed
    run resumed in the same job; then a run in which rank 1 alone raises."""
    torch.set_num_threads(1)
    out, d = Path(argv[1]), Path(argv[2])
    ctx = init_parallel()
    try:
        res: dict = {"world_size": ctx.world_size}
        e = make_energy()
        run_sgd(e, ShiftedGridNegatives(DIM, GRID), ctx)
        res["grid_params"] = params(e)
        e2 = make_energy()
        run_sgd(e2, ImportanceNegatives(DIM, 512), ctx)
        res["is_params"] = params(e2)
        e2p = make_energy()
        run_sgd(e2p, ImportanceNegatives(DIM, 512, refresh=64), ctx)
        res["is_pool_params"] = params(e2p)
        e3 = make_energy()
        run_sgd(e3, PersistentChains(DIM, 64, n_steps=2), ctx)
        res["pcd_params"] = params(e3)
        res["convex"] = run_convex(ctx)
        est = EnergyDensity(**EST_KW).fit(X4, parallel=ctx)
        res["est4"] = torch.as_tensor(est.score_samples(X4[:20]))
        res["qmc"] = log_partition_qmc_distributed(
            e, Uniform(DIM), ctx, n_points=1024, n_rep=4, random_state=11
        ).scalars()
        res["quad"] = log_partition_quadrature_distributed(e, Uniform(DIM), ctx).scalars()
        res["auto"] = log_partition_distributed(e, Uniform(DIM), ctx).scalars()
        imp = log_partition_importance_distributed(e, ctx=ctx, n_samples=256, n_batches=5, seed=4)
        res["is"] = (imp.scalars(), imp.diagnostics.batch_logz)
        _, Uv = make_data()
        res["val"] = validation_nll_distributed(e, shard_rows(Uv, ctx), Uniform(DIM), ctx)
        lw = torch.randn(50, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        res["lme"] = log_mean_exp_distributed(shard_rows(lw, ctx), ctx, method="ais").scalars()
        ais = log_partition_ais_distributed(e, ctx=ctx, **AIS_KW)
        g = ais.diagnostics
        res["ais"] = (ais.scalars(), g.log_weights, g.acceptance, g.ess)
        ck = d / "interrupted.ckpt"

        class Killed(PersistentChains):  # every rank dies at step 6 (after the 2nd write)
            calls = 0

            def __call__(self, energy, generator=None):
                Killed.calls += 1
                if Killed.calls == 6:
                    raise _Kill
                return super().__call__(energy, generator)

        Killed.__name__ = "PersistentChains"  # the same strategy, as the checkpoint sees it
        try:
            run_sgd(make_energy(), Killed(DIM, 64, n_steps=2), ctx, RunCheckpoint(ck))
        except _Kill:
            pass
        e4 = make_energy()
        run_sgd(e4, PersistentChains(DIM, 64, n_steps=2), ctx, RunCheckpoint(ck, resume=True))
        res["resumed_pcd"] = params(e4)
        if ctx.is_main:
            torch.save(res, out)
        ctx.barrier()

        class Failing(ShiftedGridNegatives):
            calls = 0

            def __call__(self, energy, generator=None):
                Failing.calls += 1
                if ctx.rank == 1 and Failing.calls == 5:
                    raise RuntimeError("injected failure on rank 1 at step 5")
                return super().__call__(energy, generator)

        run_sgd(make_energy(), Failing(DIM, GRID), ctx, RunCheckpoint(d / "failed.ckpt"))
    finally:
        shutdown_parallel()


# ============================================================================ in-process tests
@pytest.mark.parametrize("n", [0, 1, 7, 10, 100])
@pytest.mark.parametrize("w", [1, 2, 3, 8])
def test_partition_range_is_a_balanced_partition(n, w):
    ranges = [partition_range(n, r, w) for r in range(w)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    sizes = [e - s for s, e in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_step_seed_depends_on_keys_not_on_anything_else():
    assert step_seed(3, 1, 5) == step_seed(3, 1, 5)
    assert len({step_seed(3, 1, t) for t in range(100)} | {step_seed(4, 1, 0)}) == 101
    assert 0 <= step_seed(2**40, 0, 1) < 2**63


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    doc = load_checkpoint(path)
    assert doc["step"] == 1 and torch.equal(doc["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


def test_load_checkpoint_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt")
    torch.save({"a": 1}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not an ebmfit checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")


def test_one_rank_context_is_the_plain_loop():
    a, b = make_energy(), make_energy()
    run_sgd(a, ShiftedGridNegatives(DIM, GRID))
    run_sgd(b, ShiftedGridNegatives(DIM, GRID), ParallelContext())
    assert max_diff(params(a), params(b)) == 0.0
    assert torch.equal(run_convex(), run_convex(ParallelContext()))


def test_sharded_negatives_partition_the_single_process_set():
    from ebmfit.training.sharding import ShardedNegatives

    e = make_energy()
    for strat in (ShiftedGridNegatives(DIM, GRID), ImportanceNegatives(DIM, 300)):
        full = strat(e, torch.Generator().manual_seed(4))
        parts = [
            ShardedNegatives(strat, ParallelContext(rank=r, world_size=3), None)(
                e, torch.Generator().manual_seed(4)
            )
            for r in range(3)
        ]
        assert torch.equal(torch.cat([p.points for p in parts]), full.points)
    chains = [
        ShardedNegatives(PersistentChains(DIM, 10), ParallelContext(rank=r, world_size=3),
                         torch.Generator().manual_seed(1))
        for r in range(3)
    ]  # fmt: skip
    outs = [c(e) for c in chains]
    assert [o.points.shape[0] for o in outs] == [4, 3, 3]
    assert all(torch.allclose(o.log_weights, torch.full_like(o.log_weights, -math.log(10)))
               for o in outs)  # fmt: skip
    assert not torch.allclose(outs[1].points, outs[2].points)  # rank-specific streams


def test_generator_state_round_trips_through_a_checkpoint(tmp_path):
    g = torch.Generator().manual_seed(3)
    save_checkpoint({"rng": g.get_state()}, tmp_path / "r.ckpt")
    a = torch.rand(3, generator=g)
    g2 = torch.Generator()
    g2.set_state(load_checkpoint(tmp_path / "r.ckpt")["rng"])
    assert torch.equal(a, torch.rand(3, generator=g2))


@pytest.mark.parametrize("kind", ["grid", "pcd"])
def test_resume_in_process_is_exact_and_rejects_other_settings(tmp_path, kind):
    def strat():
        return ShiftedGridNegatives(DIM, GRID) if kind == "grid" else PersistentChains(DIM, 32)

    ck = tmp_path / "run.ckpt"
    full = make_energy()
    r_full = run_sgd(full, strat())
    with pytest.raises(_Kill):
        run_sgd(make_energy(), strat(), checkpoint=KilledAfter(ck, 2))
    assert load_checkpoint(ck)["sections"]["sgd-0"]["it"] == 2 * VAL_EVERY
    resumed = make_energy()
    r = run_sgd(resumed, strat(), checkpoint=RunCheckpoint(ck, resume=True))
    assert r.history == r_full.history and r.n_iter == r_full.n_iter
    assert max_diff(params(resumed), params(full)) == 0.0
    again = make_energy()  # a finished loop is reloaded, not continued
    r = run_sgd(again, strat(), checkpoint=RunCheckpoint(ck, resume=True))
    assert (r.n_iter, r.stop_reason) == (STEPS, "max_iter")
    assert max_diff(params(again), params(full)) == 0.0
    with pytest.raises(CheckpointError, match="max_iter"):
        run_sgd(make_energy(), strat(), checkpoint=RunCheckpoint(ck, resume=True), max_iter=9)


def test_estimator_with_checkpoint_fits_the_same_model(tmp_path):
    X = np.random.default_rng(1).normal(size=(120, 2))
    kw = {"energy": "mlp", "max_iter": 6, "random_state": 0}
    a = EnergyDensity(**kw).fit(X)
    b = EnergyDensity(**kw).fit(X, checkpoint=RunCheckpoint(tmp_path / "c.ckpt"))
    assert np.array_equal(a.score_samples(X), b.score_samples(X))
    assert "sgd-0" in load_checkpoint(tmp_path / "c.ckpt")["sections"]
    s = EnergyDensity(energy="spline", random_state=0)  # used to fail with a TypeError
    s.fit(X, checkpoint=RunCheckpoint(tmp_path / "s.ckpt"))
    assert np.array_equal(
        s.score_samples(X), EnergyDensity(energy="spline", random_state=0).fit(X).score_samples(X)
    )


# ============================================================================ multi-process tests
@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """One torchrun job (start-up dominates on this machine); it ends with rank 1 raising."""
    d = tmp_path_factory.mktemp("suite")
    proc = torchrun(["suite", str(d / "suite.pt"), str(d)])
    if not (d / "suite.pt").is_file():
        pytest.fail(f"worker failed early (rc={proc.returncode}):\n{proc.stderr[-6000:]}")
    res = torch.load(d / "suite.pt", weights_only=True)
    res.update(proc=proc, dir=d)
    return res


def test_two_ranks_match_one_process_exact_grid_and_importance(suite):
    assert suite["world_size"] == 2
    for key, strat in (("grid_params", ShiftedGridNegatives(DIM, GRID)),
                       ("is_params", ImportanceNegatives(DIM, 512)),
                       ("is_pool_params", ImportanceNegatives(DIM, 512, refresh=64))):  # fmt: skip
        e = make_energy()
        run_sgd(e, strat)
        assert max_diff(suite[key], params(e)) < PARAM_TOL


def test_two_ranks_convex_fit_matches_one_process(suite):
    assert torch.allclose(suite["convex"], run_convex(), rtol=0, atol=1e-9)


def test_two_ranks_default_estimator_matches_one_process(suite):
    one = EnergyDensity(**EST_KW).fit(X4).score_samples(X4[:20])
    assert np.allclose(suite["est4"].numpy(), one, rtol=0, atol=1e-5)


def test_sharded_persistent_chains_train_and_resume(suite):
    assert all(torch.isfinite(p).all() for p in suite["pcd_params"])
    assert max_diff(suite["resumed_pcd"], suite["pcd_params"]) == 0.0


def test_a_rank_that_raises_stops_the_run_and_keeps_the_checkpoint(suite):
    proc, d = suite["proc"], suite["dir"]
    assert proc.returncode != 0
    assert "injected failure on rank 1 at step 5" in proc.stderr
    doc = load_checkpoint(d / "failed.ckpt")
    assert doc["sections"]["sgd-0"]["it"] == 4 and len(doc["sections"]["sgd-0"]["negatives"]) == 2
    assert not any(d.glob("*.tmp"))


def test_cli_fit_with_two_processes_fits_the_default_model(tmp_path, capfd):
    from ebmfit.launch import launch_local

    X = np.round(np.random.default_rng(1).random((200, 1)), 6)  # as written to the CSV
    data = tmp_path / "data.csv"
    data.write_text("a\n" + "".join(f"{x:.6f}\n" for x in X[:, 0]))
    out, ck = tmp_path / "m.ebm", tmp_path / "m.ckpt"
    args = ["fit", str(data), "-o", str(out), "--max-iter", "3"]
    rc = launch_local(2, [*args, "--checkpoint", str(ck), "-q"], timeout=LAUNCH_TIMEOUT,
                      env=_child_env())  # fmt: skip
    captured = capfd.readouterr()
    assert rc == 0, captured.err[-6000:]
    two = EnergyDensity.load(out)
    assert list(two.feature_names_in_) == ["a"]
    one = EnergyDensity(max_iter=3, random_state=0).fit(X)
    assert two.model_.energy_fn.family == one.energy_.family
    assert np.allclose(two.score_samples(X), one.score_samples(X), rtol=0, atol=1e-6)


def test_cli_nproc_relaunches_itself_through_torchrun(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import ebmfit.launch as L
    from ebmfit.cli import app

    calls = []
    monkeypatch.setattr(L, "launch_local", lambda n, argv, **kw: calls.append((n, argv)) or 3)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    args = ["fit", "d.csv", "-o", "m.ebm", "--energy", "mlp", "--nproc", "2", "--resume"]
    r = CliRunner().invoke(app, [*args, "--checkpoint", "c.ckpt"])
    assert r.exit_code == 3  # torchrun's status is passed on
    n, argv = calls[0]
    assert n == 2 and argv[:2] == ["fit", "d.csv"] and "--nproc" not in argv
    assert {"--resume", "--checkpoint", "c.ckpt", "mlp"} <= set(argv)


def test_qmc_log_partition_two_ranks_equals_one(suite):
    e = make_energy()
    for p, s in zip(e.parameters(), suite["grid_params"], strict=True):
        p.data.copy_(s)
    one = log_partition_qmc(e, n_points=1024, n_rep=4, random_state=11)
    value, stderr, method, n_evals, bias = suite["qmc"]
    assert value == pytest.approx(one.value, abs=1e-13)
    assert stderr == pytest.approx(one.stderr, rel=1e-9)
    assert (method, n_evals, bias) == (one.method, one.n_evals, one.bias)
    q = log_partition_quadrature(e)
    assert suite["quad"][0] == pytest.approx(q.value, abs=1e-12)
    _, Uv = make_data()
    assert suite["val"] == pytest.approx(validation_nll(e, Uv, Uniform(DIM)), abs=1e-12)


def test_ais_across_two_ranks_equals_one_rank_with_the_same_chains(suite):
    e = make_energy()
    for p, s in zip(e.parameters(), suite["grid_params"], strict=True):
        p.data.copy_(s)
    one = log_partition_ais_distributed(e, ctx=current_context("cpu"), **AIS_KW)
    logz, lw, acc, ess = suite["ais"]
    assert torch.allclose(lw, one.diagnostics.log_weights, rtol=0, atol=1e-12)
    assert logz[0] == pytest.approx(one.value, abs=1e-12)
    assert logz[1] == pytest.approx(one.stderr, rel=1e-9) and logz[1] > 0
    assert logz[2:] == one.scalars()[2:] and ess == pytest.approx(one.diagnostics.ess)
    assert torch.allclose(acc, one.diagnostics.acceptance, atol=1e-12)


def test_importance_and_auto_across_two_ranks_equal_one_rank(suite):
    e = make_energy()
    for p, s in zip(e.parameters(), suite["grid_params"], strict=True):
        p.data.copy_(s)
    one = log_partition_importance_distributed(
        e, ctx=current_context("cpu"), n_samples=256, n_batches=5, seed=4
    )
    (value, stderr, *rest), batch_logz = suite["is"]
    assert torch.allclose(batch_logz, one.diagnostics.batch_logz, rtol=0, atol=1e-12)
    assert value == pytest.approx(one.value, abs=1e-12) and stderr == pytest.approx(one.stderr)
    assert tuple(rest) == one.scalars()[2:] == ("importance", 1280, "lower")
    # "auto" in the split path is the estimator's rule: checked quadrature in 2-D
    q = log_partition_quadrature(e)
    value, stderr, method, n_evals, bias = suite["auto"]
    assert value == pytest.approx(q.value, abs=1e-12)
    # the quadrature's error bar is the gap between two rules, here at round-off level
    # (~1e-15): two ranks sum in another order, so it agrees to a few ulp of log Z only
    ulp = float(np.spacing(max(1.0, abs(q.value))))
    assert stderr == pytest.approx(q.stderr, rel=1e-6, abs=64 * ulp)
    assert (method, n_evals, bias) == (q.method, q.n_evals, q.bias)


def test_log_weights_from_two_ranks_combine_like_one(suite):
    lw = torch.randn(50, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    one = log_mean_exp_distributed(lw, current_context("cpu"), method="ais")
    value, stderr, method, n, bias = suite["lme"]
    assert value == pytest.approx(one.value, abs=1e-13) and stderr == pytest.approx(one.stderr)
    assert value == pytest.approx(float(torch.logsumexp(lw, 0) - math.log(50)), abs=1e-13)
    assert (method, n, bias) == ("ais", 50, "lower")


def test_argv_from_click_round_trips_a_command_line():
    from typer.testing import CliRunner

    from ebmfit.launch import argv_from_click

    app, seen = typer.Typer(), []

    @app.command()
    def fit(
        ctx: typer.Context,
        data: str,
        output: str = typer.Option(..., "--output", "-o"),
        max_iter: int = typer.Option(None),
        clip: bool = False,
        quiet: bool = typer.Option(False, "--quiet", "-q"),
        nproc: int = 1,
    ):
        seen.append((argv_from_click(ctx), ctx.params))

    @app.command()
    def other():  # two commands, so that "fit" is a subcommand as in ebmfit
        pass

    args = ["fit", "d.csv", "-o", "m.ebm", "--clip", "-q", "--nproc", "2"]
    assert CliRunner().invoke(app, args).exit_code == 0
    argv, params_ = seen[-1]
    assert "--nproc" not in argv and argv[:2] == ["fit", "d.csv"]
    assert CliRunner().invoke(app, argv).exit_code == 0
    assert seen[-1][1] == {**params_, "nproc": 1}


if __name__ == "__main__":
    _worker(sys.argv[1:])
