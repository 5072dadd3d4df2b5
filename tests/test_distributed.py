"""Data-parallel training, log Z across ranks, checkpoints and failures (torch.distributed).

Multi-process tests launch this very file as the worker script under
``python -m torch.distributed.run --nproc-per-node 2`` (gloo on 127.0.0.1, one thread per
rank, a hard timeout on every launch) and compare with single-process references computed here.
One job does all the two-rank checks (start-up dominates on a shared 2-core machine) and ends
with a real failure: rank 1 raises, torchrun stops rank 0, the job exits non-zero.

Tolerances: gradients are compared to 1e-13 (float64 sums in another order).  Parameters after
T Adam steps are compared to T·lr·δ/ε with δ = 1e-14: Adam's step g/(√v̂ + ε) has derivative up
to 1/ε in g, so gradients that agree to δ give parameters that agree to lr·δ/ε per step.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import typer

from ebmfit.base import Uniform
from ebmfit.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from ebmfit.energies import MLPEnergy
from ebmfit.partition.qmc import log_partition_qmc
from ebmfit.partition.quadrature import log_partition_quadrature
from ebmfit.training import ShiftedGridNegatives, validation_nll
from ebmfit.training.distributed import (
    DistContext,
    GridShare,
    ImportanceShare,
    current_context,
    fit_distributed,
    init_distributed,
    log_mean_exp_distributed,
    log_partition_ais_distributed,
    log_partition_qmc_distributed,
    log_partition_quadrature_distributed,
    partition_range,
    shard_rows,
    shutdown_distributed,
    step_seed,
    validation_nll_distributed,
)

HERE = Path(__file__).resolve()
DIM, GRID, STEPS, LR, BATCH, SEED = 2, 16, 8, 1e-2, 96, 3
CKPT_EVERY, VAL_EVERY, DIE_AT = 2, 4, 5
ADAM_EPS = 1e-8
PARAM_TOL = STEPS * LR * 1e-14 / ADAM_EPS
LAUNCH_TIMEOUT = 120
AIS_KW = {"n_chains": 32, "n_blocks": 4, "seed": 2, "n_temps": 8, "n_pilot": 8}


# ============================================================================ shared set-up
def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    U = torch.rand(300, DIM, generator=g, dtype=torch.float64) ** 2
    return U[:240], U[240:]


def make_energy() -> MLPEnergy:
    torch.manual_seed(0)  # nn.Linear initialisation reads the global RNG
    return MLPEnergy(DIM, hidden=(16, 16), n_fourier=4, seed=1, dtype=torch.float64)


def grid_share(seed: int = SEED) -> GridShare:
    return GridShare(ShiftedGridNegatives(DIM, GRID), seed=seed)


def importance_share() -> ImportanceShare:
    return ImportanceShare(DIM, 512, n_blocks=8, seed=SEED)


def run_fit(energy, share, ctx, **kw):
    U, Uv = make_data()
    return fit_distributed(
        energy,
        shard_rows(U, ctx),
        share,
        U_val_local=shard_rows(Uv, ctx),
        max_iter=STEPS,
        lr=LR,
        batch_size=BATCH,
        seed=SEED,
        val_every=VAL_EVERY,
        restore_best=False,
        ctx=ctx,
        **kw,
    )


def params(energy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in energy.parameters()]


def max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def reference_grid_run(steps: int = STEPS):
    """The single-process algorithm written out: global batch, full shifted grid, softmax π."""
    U, _ = make_data()
    e = make_energy()
    opt = torch.optim.Adam(e.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.02, 1 - t / steps))
    grid = ShiftedGridNegatives(DIM, GRID)
    first_grad = None
    for t in range(steps):
        g = torch.Generator().manual_seed(step_seed(SEED, 0, t))  # batch stream
        idx = torch.randint(0, U.shape[0], (BATCH,), generator=g)
        neg = grid(e, torch.Generator().manual_seed(step_seed(SEED, 1, t)))  # negatives stream
        V_neg = e(neg.points)
        pi = torch.softmax((neg.log_weights - V_neg).detach(), 0)
        loss = e(U[idx]).mean() - (pi * V_neg).sum()
        opt.zero_grad()
        loss.backward()
        if first_grad is None:
            first_grad = [p.grad.clone() for p in e.parameters()]
        opt.step()
        sched.step()
    return params(e), first_grad


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
class _Interrupt(Exception):
    pass


def _worker(argv: list[str]) -> None:
    """``suite OUT DIR`` on 2 ranks: the equivalence checks; a run interrupted on both ranks
    at step DIE_AT and resumed in the same job; then, after OUT is written, a checkpointed run
    in which rank 1 alone raises at step DIE_AT, so that torchrun has to stop rank 0."""
    torch.set_num_threads(1)
    out, d = Path(argv[1]), Path(argv[2])
    ctx = init_distributed()
    try:
        res: dict = {"world_size": ctx.world_size}
        e = make_energy()
        grads: list = []
        run_fit(
            e,
            grid_share(),
            ctx,
            callback=lambda s, i: grads.append(params_grad(e)) if s == 1 else None,
        )
        res["grid_params"], res["grid_grad"] = params(e), grads[0]
        e2 = make_energy()
        run_fit(e2, importance_share(), ctx)
        res["is_params"] = params(e2)
        res["qmc"] = tuple(
            log_partition_qmc_distributed(
                e, Uniform(DIM), ctx, n_points=1024, n_rep=4, random_state=11
            )
        )
        res["quad"] = tuple(log_partition_quadrature_distributed(e, Uniform(DIM), ctx))
        _, Uv = make_data()
        res["val"] = validation_nll_distributed(e, shard_rows(Uv, ctx), Uniform(DIM), ctx)
        lw = torch.randn(50, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        res["lme"] = tuple(log_mean_exp_distributed(shard_rows(lw, ctx), ctx, method="ais"))
        ais = log_partition_ais_distributed(e, ctx=ctx, **AIS_KW)
        res["ais"] = (tuple(ais.logz), ais.log_weights, ais.acceptance, ais.ess)

        def interrupt(step, info):  # both ranks, same step: like the whole job dying
            if step == DIE_AT:
                raise _Interrupt

        with contextlib.suppress(_Interrupt):
            ck = d / "interrupted.ckpt"
            run_fit(
                make_energy(),
                grid_share(),
                ctx,
                checkpoint=ck,
                checkpoint_every=CKPT_EVERY,
                callback=interrupt,
            )
        e3 = make_energy()
        r = run_fit(e3, grid_share(), ctx, checkpoint=ck, checkpoint_every=CKPT_EVERY, resume=True)
        res["resumed_params"], res["resumed_from"] = params(e3), r.resumed_from
        if ctx.is_main:
            torch.save(res, out)
        torch.distributed.barrier()

        def fail(step, info):
            if ctx.rank == 1 and step == DIE_AT:
                (d / "failed_at").write_text(repr(time.time()))
                raise RuntimeError(f"injected failure on rank 1 at step {DIE_AT}")

        run_fit(
            make_energy(),
            grid_share(),
            ctx,
            checkpoint=d / "failed.ckpt",
            checkpoint_every=CKPT_EVERY,
            callback=fail,
        )
    finally:
        shutdown_distributed()


def params_grad(energy) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in energy.parameters()]


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


def _fake(rank, world):  # a context without a process group: the shares need no collectives
    return DistContext(rank=rank, world_size=world)


def test_grid_shares_partition_the_single_process_grid():
    e = make_energy()
    full = grid_share()(e, 4, _fake(0, 1))
    g = torch.Generator().manual_seed(step_seed(SEED, 1, 4))
    direct = ShiftedGridNegatives(DIM, GRID)(e, g)
    assert torch.equal(full.points, direct.points)
    parts = [grid_share()(e, 4, _fake(r, 3)) for r in range(3)]
    assert torch.equal(torch.cat([p.points for p in parts]), full.points)
    assert torch.equal(torch.cat([p.log_weights for p in parts]), full.log_weights)
    assert not torch.equal(grid_share()(e, 5, _fake(0, 1)).points, full.points)


def test_importance_shares_are_distinct_and_independent_of_world_size():
    e = make_energy()
    one = importance_share()(e, 2, _fake(0, 1))
    for w in (2, 3, 8):
        parts = [importance_share()(e, 2, _fake(r, w)) for r in range(w)]
        assert torch.equal(torch.cat([p.points for p in parts]), one.points)
    a, b = (importance_share()(e, 2, _fake(r, 2)).points for r in (0, 1))
    assert a.shape == b.shape == (256, DIM) and not torch.allclose(a, b)
    assert torch.allclose(one.log_weights, torch.full((512,), -math.log(512), dtype=torch.float64))


def test_single_rank_fit_equals_reference_loop():
    ref, ref_grad = reference_grid_run()
    e = make_energy()
    grads: list = []
    run_fit(
        e,
        grid_share(),
        current_context("cpu"),
        callback=lambda s, i: grads.append(params_grad(e)) if s == 1 else None,
    )
    assert max_diff(grads[0], ref_grad) < 1e-13
    assert max_diff(params(e), ref) < PARAM_TOL


def test_single_rank_log_partition_and_validation_match_one_process_rules():
    e = make_energy()
    ctx = current_context("cpu")
    a = log_partition_qmc(e, n_points=1024, n_rep=4, random_state=11)
    b = log_partition_qmc_distributed(e, ctx=ctx, n_points=1024, n_rep=4, random_state=11)
    assert b.value == pytest.approx(a.value, abs=1e-13) and b.stderr == pytest.approx(a.stderr)
    q1, q2 = log_partition_quadrature(e), log_partition_quadrature_distributed(e, ctx=ctx)
    assert q2.value == pytest.approx(q1.value, abs=1e-12) and q2.n_evals == q1.n_evals
    _, Uv = make_data()
    assert validation_nll_distributed(e, Uv, Uniform(DIM), ctx) == pytest.approx(
        validation_nll(e, Uv, Uniform(DIM)), abs=1e-12
    )


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


def test_rng_state_round_trip(tmp_path):
    import random

    import numpy as np

    state = capture_rng_state()
    save_checkpoint({"rng": state}, tmp_path / "r.ckpt")
    a = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    restore_rng_state(load_checkpoint(tmp_path / "r.ckpt")["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_resume_in_process_is_exact_and_rejects_other_settings(tmp_path):
    ctx = current_context("cpu")
    ck = tmp_path / "run.ckpt"
    full = make_energy()
    r_full = run_fit(full, grid_share(), ctx)
    part = make_energy()
    run_fit(
        part,
        grid_share(),
        ctx,
        checkpoint=ck,
        checkpoint_every=CKPT_EVERY,
        callback=lambda s, i: s == DIE_AT,
    )
    assert load_checkpoint(ck)["step"] == DIE_AT  # written when the callback stopped the run
    resumed = MLPEnergy(DIM, hidden=(16, 16), n_fourier=4, seed=1, dtype=torch.float64)
    r = run_fit(resumed, grid_share(), ctx, checkpoint=ck, resume=True)
    assert r.resumed_from == DIE_AT and r.history == r_full.history
    assert max_diff(params(resumed), params(full)) == 0.0
    again = make_energy()  # a finished run is reloaded, not continued
    r = run_fit(again, grid_share(), ctx, checkpoint=ck, resume=True)
    assert (r.resumed_from, r.n_iter, r.stop_reason) == (STEPS, STEPS, "max_iter")
    assert max_diff(params(again), params(full)) == 0.0
    with pytest.raises(CheckpointError, match="seed"):
        run_fit(make_energy(), grid_share(seed=SEED + 1), ctx, checkpoint=ck, resume=True)


# ============================================================================ multi-process tests
@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """One torchrun job (start-up dominates on this machine); it ends with rank 1 raising."""
    d = tmp_path_factory.mktemp("suite")
    proc = torchrun(["suite", str(d / "suite.pt"), str(d)])
    t_exit = time.time()
    if not (d / "suite.pt").is_file():
        pytest.fail(f"worker failed early (rc={proc.returncode}):\n{proc.stderr[-6000:]}")
    res = torch.load(d / "suite.pt", weights_only=True)
    res.update(proc=proc, t_exit=t_exit, dir=d)
    return res


def test_two_ranks_match_single_process_exact_grid(suite):
    ref, ref_grad = reference_grid_run()
    assert suite["world_size"] == 2
    assert max_diff(suite["grid_grad"], ref_grad) < 1e-13
    assert max_diff(suite["grid_params"], ref) < PARAM_TOL


def test_two_ranks_match_single_process_importance_sampling(suite):
    e = make_energy()
    run_fit(e, importance_share(), current_context("cpu"))
    assert max_diff(suite["is_params"], params(e)) < PARAM_TOL


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
    assert torch.allclose(lw, one.log_weights, rtol=0, atol=1e-12)
    assert logz[0] == pytest.approx(one.logz.value, abs=1e-12)
    assert logz[1] == pytest.approx(one.logz.stderr, rel=1e-9) and logz[1] > 0
    assert logz[2:] == tuple(one.logz)[2:] and ess == pytest.approx(one.ess)
    assert torch.allclose(acc, one.acceptance, atol=1e-12)


def test_log_weights_from_two_ranks_combine_like_one(suite):
    lw = torch.randn(50, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    one = log_mean_exp_distributed(lw, current_context("cpu"), method="ais")
    value, stderr, method, n, bias = suite["lme"]
    assert value == pytest.approx(one.value, abs=1e-13) and stderr == pytest.approx(one.stderr)
    assert value == pytest.approx(float(torch.logsumexp(lw, 0) - math.log(50)), abs=1e-13)
    assert (method, n, bias) == ("ais", 50, "lower")


def test_a_rank_that_raises_stops_the_run_quickly_and_keeps_the_checkpoint(suite):
    proc, d = suite["proc"], suite["dir"]
    assert proc.returncode != 0
    assert f"injected failure on rank 1 at step {DIE_AT}" in proc.stderr
    # torchrun stops the surviving rank at once: well inside the 60 s collective timeout
    assert suite["t_exit"] - float((d / "failed_at").read_text()) < 30
    doc = load_checkpoint(d / "failed.ckpt")
    assert doc["step"] == DIE_AT - DIE_AT % CKPT_EVERY and doc["world_size"] == 2
    assert len(doc["rng"]) == 2 and not any(d.glob("*.tmp"))


def test_interrupted_run_resumes_on_the_same_world_size_bit_for_bit(suite):
    assert suite["resumed_from"] == DIE_AT - DIE_AT % CKPT_EVERY
    assert max_diff(suite["resumed_params"], suite["grid_params"]) == 0.0


def test_killed_run_resumes_on_another_world_size(suite, tmp_path):
    e = make_energy()
    ck = Path(shutil.copy(suite["dir"] / "failed.ckpt", tmp_path / "failed.ckpt"))
    with pytest.warns(UserWarning, match="RNG states"):
        r = run_fit(e, grid_share(), current_context("cpu"), checkpoint=ck, resume=True)
    assert r.resumed_from == DIE_AT - DIE_AT % CKPT_EVERY
    assert max_diff(params(e), suite["grid_params"]) < PARAM_TOL


def test_cli_fit_with_two_processes(tmp_path, capfd):
    from ebmfit.training.distributed import launch_local

    X = torch.rand(200, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    data = tmp_path / "data.csv"  # one column: the checking rule is cheap in 1-D
    data.write_text("a\n" + "".join(f"{x:.6f}\n" for x in X.tolist()))
    out, ck = tmp_path / "m.ebm", tmp_path / "m.ckpt"
    args = ["fit", str(data), "-o", str(out), "--energy", "mlp", "--max-iter", "3"]
    # what `ebmfit fit ... --nproc 2` runs (the CLI's side is checked with a stub below)
    rc = launch_local(
        2, [*args, "--checkpoint", str(ck), "-q"], timeout=LAUNCH_TIMEOUT, env=_child_env()
    )
    captured = capfd.readouterr()
    assert rc == 0, captured.err[-6000:]
    assert "on 2 rank(s)" in captured.out
    from ebmfit.estimator import EnergyDensity

    est = EnergyDensity.load(out)
    assert list(est.feature_names_in_) == ["a"] and math.isfinite(est.log_partition_.value)
    assert load_checkpoint(ck)["step"] == 3


def test_cli_nproc_relaunches_itself_through_torchrun(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import ebmfit.training.distributed as D
    from ebmfit.cli import app

    calls = []
    monkeypatch.setattr(D, "launch_local", lambda n, argv, **kw: calls.append((n, argv)) or 3)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    args = ["fit", "d.csv", "-o", "m.ebm", "--energy", "mlp", "--nproc", "2", "--resume"]
    r = CliRunner().invoke(app, [*args, "--checkpoint", "c.ckpt"])
    assert r.exit_code == 3  # torchrun's status is passed on
    n, argv = calls[0]
    assert n == 2 and argv[:2] == ["fit", "d.csv"] and "--nproc" not in argv
    assert {"--resume", "--checkpoint", "c.ckpt", "mlp"} <= set(argv)


def test_argv_from_click_round_trips_a_command_line():
    from typer.testing import CliRunner

    from ebmfit.training.distributed import argv_from_click

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


def test_cli_fit_checkpoint_in_one_process_and_resume_checks_settings(tmp_path):
    from typer.testing import CliRunner

    from ebmfit.cli import app

    X = torch.rand(100, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    data = tmp_path / "data.csv"
    data.write_text("".join(f"{x:.6f}\n" for x in X.tolist()))
    out, ck = tmp_path / "m.ebm", tmp_path / "m.ckpt"
    args = ["fit", str(data), "-o", str(out), "--energy", "mlp", "--max-iter", "2", "-q"]
    r = CliRunner().invoke(app, [*args, "--checkpoint", str(ck)])
    assert r.exit_code == 0, r.output
    assert "on 1 rank(s)" in r.output and load_checkpoint(ck)["step"] == 2
    r = CliRunner().invoke(app, [*args, "--checkpoint", str(ck), "--resume", "--seed", "1"])
    assert r.exit_code == 1 and "other settings" in r.output


if __name__ == "__main__":  # worker entry under torchrun
    _worker(sys.argv[1:])
    sys.exit(0)
