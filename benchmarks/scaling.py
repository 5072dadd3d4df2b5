"""Data-parallel scaling of the fit loop: 1 process vs 2 processes (torchrun, gloo, DDP).

Problem: the banana target on the unit square, 4000 training + 1000 validation samples, the
default Fourier-feature MLP (3×128 SiLU, 64 frequencies, float32), exact negatives from a
shifted 96×96 grid, full batch, Adam (the setting of DESIGN.md's measurements).  Every configuration follows the same trajectory (the global batch and
the grid shift depend on (seed, step) only), so all reach the target validation NLL at the same
step and "time to target" differs only through the speed of a step.

Configurations: 1 process × 1 thread, 1 process × 2 threads, 2 processes × 1 thread, run in
interleaved rounds (machine load hits all alike); medians are reported.  In the 2-process runs
the ranks also time a bare all-reduce of the gradient (all parameters, float32) and the
all-gather of the per-rank statistics (logsumexp of the negative phase, data energy sum) that
every step needs.

Run:  OMP_WAIT_POLICY=PASSIVE python benchmarks/scaling.py [--steps 60] [--rounds 2]
Writes benchmarks/results/scaling.json and scaling.md.  With CUDA, ranks use nccl and one GPU
each (``--nproc`` GPUs must be present).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
TARGET_NLL = -1.91  # validation NLL (nats, unit square); the fit plateaus near -1.916
N_TRAIN, N_VAL, GRID, SEED = 4000, 1000, 96, 0
HIDDEN, N_FOURIER = (128, 128, 128), 64  # the default MLP energy


def worker(out: Path, steps: int, val_every: int) -> None:
    import torch
    import torch.distributed as dist

    from ebmfit.datasets import load_target
    from ebmfit.energies import MLPEnergy
    from ebmfit.training import ShiftedGridNegatives, fit_sgd
    from ebmfit.training.distributed import all_gather_logsumexp
    from ebmfit.training.parallel import init_parallel, shutdown_parallel

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ctx = init_parallel(device="cpu")
    X = load_target("banana").sample(N_TRAIN + N_VAL, random_state=SEED)
    U = torch.as_tensor(X)  # the banana lives on the unit square already
    U_tr, U_val = U[:N_TRAIN], U[N_TRAIN:]
    energy = MLPEnergy(2, hidden=HIDDEN, n_fourier=N_FOURIER, fourier_scale=3.0, seed=SEED)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # pay torch's lazy imports first
    rec: dict = {"t": [], "c": [], "val": {}}
    grid = ShiftedGridNegatives(2, GRID)
    t0 = time.perf_counter()

    def timed(e, g=None):  # called once at the start of every step: the step clock
        rec["t"].append(time.perf_counter() - t0)
        rec["c"].append(time.process_time())  # CPU time of this rank (all its threads)
        return grid(e, g)

    res = fit_sgd(
        energy, U_tr, U_val, timed, max_iter=steps, lr=5e-3, val_every=val_every,
        patience=10**9, generator=torch.Generator().manual_seed(SEED), parallel=ctx,
    )  # fmt: skip
    rec["t"].append(time.perf_counter() - t0)
    rec["c"].append(time.process_time())
    rec["val"] = {r["iter"]: r["val_nll"] for r in res.history if "val_nll" in r}
    rec["t"], rec["c"] = rec["t"][1:], rec["c"][1:]  # t[s-1]: end of step s
    hit = [s for s, v in sorted(rec["val"].items()) if v <= TARGET_NLL]
    t = rec["t"]  # t[s-1]: end of step s; skip step 1 and steps that ran a validation
    kept = [s for s in range(2, steps + 1) if s % val_every]
    dts = sorted(t[s - 1] - t[s - 2] for s in kept)
    cpu = sorted(rec["c"][s - 1] - rec["c"][s - 2] for s in kept)
    out_d = {
        "world_size": ctx.world_size,
        "threads": torch.get_num_threads(),
        "step_time_s": (rec["t"][-1] - rec["t"][0]) / (steps - 1),
        "steps_per_s": (steps - 1) / (rec["t"][-1] - rec["t"][0]),
        "wall_s": rec["t"][-1],
        "final_val_nll": rec["val"][steps],
        "steps_to_target": hit[0] if hit else None,
        "time_to_target_s": rec["t"][hit[0] - 1] if hit else None,
        "n_params": sum(p.numel() for p in energy.parameters()),
        "step_ms_median": 1e3 * statistics.median(dts),
        "step_ms_p10": 1e3 * dts[len(dts) // 10],
        "cpu_ms_per_step": 1e3 * statistics.median(cpu),
    }
    if ctx.active:  # bare costs of the two collectives of a step
        flat = torch.zeros(out_d["n_params"], dtype=torch.float32)
        stats = torch.zeros(3, dtype=torch.float64)
        for name, fn in (
            ("allreduce_grad_us", lambda: dist.all_reduce(flat)),
            ("allgather_stats_us", lambda: all_gather_logsumexp(stats, ctx)),
        ):
            ts = []
            for _ in range(300):
                dist.barrier()
                a = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - a)
            out_d[name] = 1e6 * statistics.median(ts[20:])
    if ctx.is_main:
        out.write_text(json.dumps(out_d))
    shutdown_parallel()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(nproc: int, threads: int, steps: int, val_every: int, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GLOO_SOCKET_IFNAME="lo")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        args = [
            str(HERE),
            "--worker",
            str(out),
            "--steps",
            str(steps),
            "--val-every",
            str(val_every),
        ]
        if nproc == 1:
            cmd = [sys.executable, *args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1"]
            cmd += ["--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1"]
            cmd += ["--master-port", str(_free_port()), "--max-restarts", "0", *args]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, timeout=timeout)
        r = json.loads(out.read_text())
        r["launch_wall_s"] = time.perf_counter() - t0
        return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", type=Path)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--val-every", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600)
    a = p.parse_args()
    if a.worker is not None:
        worker(a.worker, a.steps, a.val_every)
        return

    sys.path.insert(0, str(HERE.parent))
    from _common import environment, write

    configs = [
        ("1 proc × 1 thread", 1, 1),
        ("1 proc × 2 threads", 1, 2),
        ("2 procs × 1 thread", 2, 1),
    ]
    env = environment()
    runs: dict[str, list] = {name: [] for name, _, _ in configs}
    for rnd in range(a.rounds):
        for name, nproc, threads in configs:
            r = run_config(nproc, threads, a.steps, a.val_every, a.timeout)
            r["round"] = rnd
            runs[name].append(r)
            print(name, json.dumps(r), flush=True)

    def med(name, key):
        vals = [r[key] for r in runs[name] if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    keys = ("steps_per_s", "step_time_s", "step_ms_median", "step_ms_p10", "cpu_ms_per_step",
            "time_to_target_s",
            "steps_to_target", "final_val_nll", "allreduce_grad_us", "allgather_stats_us",
            "launch_wall_s")  # fmt: skip
    summary = {name: {k: med(name, k) for k in keys} for name, _, _ in configs}
    s1, s1t2, s2 = (summary[n[0]] for n in configs)
    eff = {
        k: s1[k] / (2 * s2[k]) for k in ("step_ms_median", "step_ms_p10")
    }  # T1 / (2 T2): 1 = perfect
    speedup_2t = s1t2["step_ms_median"] / s2["step_ms_median"]
    work_eff = s1["cpu_ms_per_step"] / (2 * s2["cpu_ms_per_step"])
    overhead_ms = s2["step_ms_median"] - s1["step_ms_median"] / 2
    comm_ms = 1e-3 * (s2["allreduce_grad_us"] + s2["allgather_stats_us"])
    model = f"MLP {len(HIDDEN)}x{HIDDEN[0]} SiLU on {N_FOURIER} Fourier features, float32"
    payload = {
        "environment": env,
        "command": "OMP_WAIT_POLICY=PASSIVE python benchmarks/scaling.py "
        f"--steps {a.steps} --val-every {a.val_every} --rounds {a.rounds}",
        "problem": {
            "target": "banana",
            "n_train": N_TRAIN,
            "n_val": N_VAL,
            "energy": model,
            "negatives": f"shifted {GRID}x{GRID} grid (exact), full batch",
            "target_val_nll": TARGET_NLL,
        },
        "runs": runs,
        "summary": summary,
        "parallel_efficiency_median_step": eff["step_ms_median"],
        "parallel_efficiency_p10_step": eff["step_ms_p10"],
        "speedup_vs_1proc_2threads": speedup_2t,
        "work_efficiency_cpu": work_eff,
        "overhead_per_step_ms": overhead_ms,
        "collectives_per_step_ms": comm_ms,
    }
    rows = ["| configuration | ms/step (median) | ms/step (10th pct) | CPU ms/step/rank | "
            "steps/s (mean) | "
            "steps to target | time to target (s) | final val NLL | all-reduce grad (µs) | "
            "all-gather stats (µs) |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, _, _ in configs:
        s = summary[name]
        f = lambda v, fmt: "–" if v is None else format(v, fmt)  # noqa: E731
        rows.append(
            f"| {name} | {f(s['step_ms_median'], '.1f')} | {f(s['step_ms_p10'], '.1f')} | "
            f"{f(s['cpu_ms_per_step'], '.1f')} | "
            f"{f(s['steps_per_s'], '.1f')} | {f(s['steps_to_target'], '.0f')} | "
            f"{f(s['time_to_target_s'], '.1f')} | {f(s['final_val_nll'], '.4f')} | "
            f"{f(s['allreduce_grad_us'], '.0f')} | {f(s['allgather_stats_us'], '.0f')} |"
        )
    table = (
        f"`{payload['command']}`\n\n"
        f"Banana target, {N_TRAIN} training rows, exact {GRID}×{GRID} shifted-grid negatives "
        f"(full batch: {N_TRAIN + GRID**2} points through the network per step), {model}, "
        f"Adam; {a.steps} steps, validation every {a.val_every}; target validation NLL "
        f"{TARGET_NLL}. Step times exclude steps that ran a validation; medians over "
        f"{a.rounds} interleaved rounds. Time to target includes the validations (split over "
        "ranks as well), not start-up.\n\n" + "\n".join(rows) + "\n\n"
        f"- parallel efficiency T₁/(2·T₂), 2 procs vs 1 proc × 1 thread: "
        f"**{eff['step_ms_median']:.2f}** (median steps), {eff['step_ms_p10']:.2f} (fastest "
        f"10 % of steps, a proxy for an idle machine); speed-up vs 1 proc × 2 threads: "
        f"**{speedup_2t:.2f}×**\n"
        f"- work efficiency (CPU time per step of one 1×1 process / 2 × that of one rank): "
        f"**{work_eff:.2f}** — how evenly the step's work is split, independent of waiting\n"
        f"- overhead per step (2-proc median step − half the 1×1 median step): "
        f"{overhead_ms:.1f} ms; bare collectives per step (gradient all-reduce + statistics "
        f"all-gather, both ranks ready): {comm_ms:.2f} ms\n"
    )
    la0, la1 = env["loadavg_start"][0], os.getloadavg()[0]
    table += (
        "\n**Why not 2×.** (1) This machine has 2 cores shared by several sessions (load "
        f"average {la0:.1f} → {la1:.1f} during the run): a process rarely holds a whole core, "
        "and the two ranks are rarely on a core at the same moment. Every step has two points "
        "where the ranks wait for each other — DDP's gradient all-reduce at the end of the "
        "backward pass, and the all-gather of the negative phase's logsumexp that π needs — "
        "and a rank that has been preempted makes its peer wait for a scheduler time slice. "
        f"The bare collectives cost {comm_ms:.1f} ms when both ranks are ready "
        f"({100 * comm_ms / s2['step_ms_median']:.1f} % of a step); the rest of the "
        f"{overhead_ms:.0f} ms overhead per step is waiting and contention, not communication. "
        f"(2) The work itself splits evenly (work efficiency {work_eff:.2f}): each rank pushes "
        "half of the data and half of the grid through the network; only building the full "
        "grid before slicing it and Adam's update of the parameters are repeated on every "
        "rank, both negligible next to the network. (3) One process with 2 threads suffers "
        "from the same contention inside its OpenMP regions (its fastest steps are fast, its "
        "median ones are not). On an idle multi-core machine or on GPUs the step time should "
        "approach T₁/N until the per-rank share is so small that the ~1 ms of collectives "
        "matters; this run could not check that (no idle machine, no GPU in this session).\n"
    )
    write("scaling", payload, table)


if __name__ == "__main__":
    main()
