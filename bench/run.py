"""``python -m bench.run [--quick]``: the floors and the real system, one after the other, on the
same machine, driven by the same clients; then the correctness check and the report.

Writes bench/results/<time>.json (and latest.json), prints the table of figures against their
targets, and draws the plots (docs/img/bench-*.png for a full run, bench/results/ for --quick).
Exits 1 when a message was lost or duplicated, a seq has a gap, or verify_fairness fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench import report
from bench.correctness import check
from bench.load import run_pairs
from bench.stack import BIN, ROOT, Stack, bench_database
from bench.stats import Sampler
from bench.system import Options, System

RESULTS = ROOT / "bench" / "results"

FULL = {
    "agents": 500,
    "active": 1000,
    "waiting": 500,
    "steps": "50:20,100:20,200:60,350:20,500:60",
    # 1,500 customers in 75 s: faster arrivals only measure how the server sheds handshakes.
    "ramp_rate": 20.0,
    "mean_messages": 40,
    "return_delay_s": 2.0,
    "breaks_per_min": 6.0,
    "break_s": 10.0,
}
QUICK = {
    "agents": 20,
    "active": 40,
    "waiting": 10,
    "steps": "10:8,25:8",
    "ramp_rate": 20.0,
    "mean_messages": 8,
    "return_delay_s": 0.5,
    "breaks_per_min": 6.0,
    "break_s": 2.0,
}


# ``system@<variant>`` targets: the real system with another settings module (a same-run baseline)
# or more daphne processes, run in the same invocation as the plain ``system`` so both see the
# same machine.
VARIANTS: dict[str, dict[str, object]] = {
    # Same-run baseline: channels-redis' stock layer instead of dayone_chat/layers.py.
    "stock_layer": {"settings": "bench.settings_stock_layer"},
    # Several daphne processes behind the benchmark's clients (each client picks one).
    "two": {"servers": 2},
}


def parse_steps(text: str) -> list[tuple[float, float]]:
    steps = []
    for part in text.split(","):
        rate, _, duration = part.partition(":")
        steps.append((float(rate), float(duration)))
    return steps


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small numbers, under two minutes")
    parser.add_argument("--agents", type=int, help="agents on shift (2 seats each)")
    parser.add_argument("--active", type=int, help="active chats to hold")
    parser.add_argument("--waiting", type=int, help="customers waiting in the queue besides")
    parser.add_argument("--steps", help="load steps RATE:SECONDS,... (messages/s for seconds)")
    parser.add_argument("--ramp-rate", type=float, help="customer arrivals/s while filling up")
    parser.add_argument("--mean-messages", type=int, help="mean messages per chat")
    parser.add_argument("--return-delay-s", type=float, help="mean delay of a new arrival")
    parser.add_argument("--breaks-per-min", type=float, help="breaks taken per minute, all agents")
    parser.add_argument("--break-s", type=float, help="length of a break")
    parser.add_argument("--servers", type=int, default=1, help="daphne processes (default 1)")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument(
        "--settings",
        default="bench.settings",
        help="Django settings of the stack (default bench.settings: the project's, DEBUG off)",
    )
    parser.add_argument(
        "--asgi-app",
        default="dayone_chat.asgi:application",
        help="the ASGI application daphne serves",
    )
    parser.add_argument(
        "--asgi-threads",
        type=int,
        help="ASGI_THREADS for daphne: its thread pool for database calls (default 16, as in the "
        "Procfile)",
    )
    parser.add_argument(
        "--targets",
        default="websockets,channels,system",
        help="which of websockets,channels,channels_ours,system,system@VARIANT to run "
        "(default: websockets,channels,system; channels_ours is the Channels floor on "
        f"dayone_chat.layers; variants: {', '.join(VARIANTS)})",
    )
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--plots-dir", type=Path, help="where the PNGs go")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="STEP",
        help="py-spy every server process during load step STEP (1-based)",
    )
    parser.add_argument(
        "--drain-max-s",
        type=float,
        default=120.0,
        help="after the last step, how long to keep waiting for messages still arriving "
        "(a backlog) before the rest count as not delivered (default 120)",
    )
    parser.add_argument("--label", default="", help="a word for the results file name")
    parser.add_argument("--out", type=Path, help="also write the results JSON here")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        metavar="LOAD",
        help="before each target, wait (up to 30 min) until the 1-minute load average < LOAD",
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.steps = parse_steps(args.steps)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for target in args.targets:
        base, _, variant = target.partition("@")
        known = base in ("websockets", "channels", "channels_ours", "system")
        if not known or (variant and (base != "system" or variant not in VARIANTS)):
            parser.error(f"unknown target {target!r}")
    if args.plots_dir is None:
        args.plots_dir = RESULTS if args.quick else ROOT / "docs" / "img"
    return args


def machine() -> dict[str, object]:
    import psutil

    def version(module: str) -> str:
        from importlib.metadata import version as v

        try:
            return v(module)
        except Exception:
            return "?"

    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": {
            m: version(m)
            for m in (
                "Django",
                "channels",
                "channels-redis",
                "daphne",
                "redis",
                "celery",
                "psycopg",
                "websockets",
                "twisted",
            )
        },
        "load_average_at_start": os.getloadavg(),
    }


class Profiler:
    """py-spy on every daphne process for one load step; raw collapsed stacks per process."""

    def __init__(self, run_dir: Path, pids: dict[str, int], step: int | None) -> None:
        self.run_dir = run_dir
        self.pids = pids
        self.step = step
        self.procs: list[subprocess.Popen[bytes]] = []
        self.outputs: list[Path] = []

    def __call__(self, index: int, duration: float) -> None:
        if self.step is None or index != self.step - 1:
            return
        pyspy = shutil.which("py-spy") or str(BIN / "py-spy")
        for name, pid in self.pids.items():
            out = self.run_dir / f"profile-{name}.txt"
            self.outputs.append(out)
            self.procs.append(
                subprocess.Popen(
                    [
                        pyspy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(max(int(duration) - 2, 1)),
                        "--rate",
                        "200",
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--output",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=open(self.run_dir / f"profile-{name}.log", "wb"),  # noqa: SIM115
                )
            )

    def finish(self) -> list[Path]:
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        return [p for p in self.outputs if p.exists()]


async def drive_floor(
    name: str, stack: Stack, args: argparse.Namespace, sampler: Sampler
) -> dict[str, object]:
    if name == "websockets":
        proc = stack.start_floor_websockets()
    elif name == "channels_ours":
        proc = stack.start_floor_channels(
            "floor_channels_ours", "bench.floor_channels.settings_ours"
        )
    else:
        proc = stack.start_floor_channels()
    sampler.watch(proc.name, proc.popen.pid)
    sampler.start()
    profiler = Profiler(stack.run_dir, {proc.name: proc.popen.pid}, args.profile)
    try:
        return await run_pairs(
            label=f"floor {name}",
            url_of=lambda pair, side: f"ws://127.0.0.1:{proc.port}/pair/{pair}/{side}",
            pairs=args.active,
            idle=max(args.agents + args.waiting - args.active, 0),
            steps=args.steps,
            seed=args.seed,
            sampler=sampler,
            server_names=[proc.name],
            on_step=profiler,
        ) | {"profiles": [str(p) for p in profiler.finish()]}
    finally:
        await sampler.stop()
        stack.stop(proc)


async def watch_connections(stack: Stack, sampler: Sampler) -> None:
    """How many PostgreSQL connections the stack holds (the server's max_connections is a
    limit the stack can hit long before CPU does)."""
    from bench.stack import pg_connect

    def count() -> int:
        with pg_connect(stack.db, "postgres") as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [stack.db["NAME"]]
            ).fetchone()
            return int(row[0]) if row else 0

    while True:
        with contextlib.suppress(Exception):
            sampler.db_connections.append((time.monotonic(), await asyncio.to_thread(count)))
        await asyncio.sleep(2)


async def drive_system(
    stack: Stack, args: argparse.Namespace, sampler: Sampler, run_dir: Path
) -> dict[str, object]:
    """The real system; ``args`` may carry a variant's settings, application or servers."""
    print(f"  [system] preparing the database {stack.db['NAME']}", flush=True)
    customers = int((args.active + args.waiting) * 1.3) + 10
    started = time.monotonic()
    how = stack.prepare_database(args.agents, customers)
    print(f"  [system] database {how} in {time.monotonic() - started:.1f} s", flush=True)
    webs = stack.start_system(args.servers, args.worker_concurrency, args.asgi_app)
    for proc in stack.procs:
        sampler.watch(proc.name, proc.popen.pid)
    sampler.start()
    profiler = Profiler(run_dir, {w.name: w.popen.pid for w in webs}, args.profile)
    opts = Options(
        agents=args.agents,
        active=args.active,
        waiting=args.waiting,
        customers=customers,
        steps=args.steps,
        ramp_rate=args.ramp_rate,
        mean_messages=args.mean_messages,
        return_delay_s=args.return_delay_s,
        breaks_per_min=args.breaks_per_min,
        break_s=args.break_s,
        seed=args.seed,
        drain_max_s=args.drain_max_s,
    )
    connections = asyncio.create_task(watch_connections(stack, sampler))
    system = System(
        opts, [f"http://127.0.0.1:{w.port}" for w in webs], sampler, [w.name for w in webs]
    )
    try:
        result = await system.run(profiler)
    finally:
        connections.cancel()
        await sampler.stop()
    result["db_connections_peak"] = max((n for _, n in sampler.db_connections), default=None)
    result["profiles"] = [str(p) for p in profiler.finish()]
    return result


def wait_quiet(threshold: float, longest: float = 1800) -> None:
    """Other work on the machine skews every figure: wait for it to calm down (bounded)."""
    started = time.monotonic()
    while os.getloadavg()[0] >= threshold and time.monotonic() - started < longest:
        print(f"  waiting for a quiet machine: load average {os.getloadavg()[0]:.1f}", flush=True)
        time.sleep(30)


def target_key(target: str) -> str:
    return target if target.startswith("system") else f"floor_{target}"


def run_target(
    target: str,
    args: argparse.Namespace,
    stack: Stack,
    sampler: Sampler,
    run_dir: Path,
    results: dict[str, object],
) -> None:
    if not target.startswith("system"):
        results[target_key(target)] = asyncio.run(drive_floor(target, stack, args, sampler))
        return
    variant = VARIANTS.get(target.partition("@")[2], {})
    run_args = argparse.Namespace(**{**vars(args), **variant})
    stack.settings = str(variant.get("settings", args.settings))
    # A variant's logs and profiles go to a directory of their own.
    stack.run_dir = run_dir / target.replace("@", "-") if variant else run_dir
    stack.run_dir.mkdir(exist_ok=True)
    try:
        system = asyncio.run(drive_system(stack, run_args, sampler, stack.run_dir))
    finally:
        # Stopped before the check, so the database is quiet (and the next target starts clean).
        stack.stop_all()
    system["variant"] = dict(variant)
    print("  [system] checking the database", flush=True)
    system["correctness"] = check(stack, system)
    for key in ("sent_ids", "refused_ids", "delivered_counts", "acked_ids"):
        system.pop(key, None)
    results[target] = system


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS / f"run-{stamp}{'-' + args.label if args.label else ''}"
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    mode = "quick" if args.quick else "full"
    print(
        f"bench ({mode}): {args.agents} agents, {args.active} active chats + {args.waiting} "
        f"waiting, steps {args.steps}, {args.servers} daphne; logs in {run_dir}",
        flush=True,
    )
    stack = Stack(run_dir=run_dir, db=bench_database(), settings=args.settings)
    if args.asgi_threads:
        stack.extra_env["ASGI_THREADS"] = str(args.asgi_threads)
    results: dict[str, object] = {
        "mode": mode,
        "command": "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "started": stamp,
        "run_dir": str(run_dir),
        "machine": machine(),
        "config": {k: v for k, v in vars(args).items() if k not in ("plots_dir",)},
    }
    results["config"]["plots_dir"] = str(args.plots_dir)
    out = run_dir / "results.json"

    def save() -> None:
        # After every target, so a later target that fails leaves the earlier figures behind.
        out.write_text(json.dumps(results, indent=1, default=str))

    try:
        for target in args.targets:
            if args.wait_quiet:
                wait_quiet(args.wait_quiet)
            print(f"== {target} (load average {os.getloadavg()[0]:.1f})", flush=True)
            sampler = Sampler()
            # The clients share the two cores with the servers: their CPU is reported too.
            # (Not its children: those are the servers, watched on their own.)
            sampler.watch("load_generator", os.getpid(), children=False)
            load_before = os.getloadavg()[0]
            try:
                run_target(target, args, stack, sampler, run_dir, results)
            except Exception:
                # One target failing (an overloaded server dropping the run's sockets) must not
                # lose the others: the failure is reported with the rest.
                results[target_key(target)] = {"failed": traceback.format_exc()[-4000:]}
                print(f"  [{target}] FAILED:\n{results[target_key(target)]['failed']}", flush=True)
            key = target_key(target)
            # Other work on the machine (the 1-minute load average; 2 = both cores busy).
            results[key]["load_average"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
            save()
    finally:
        stack.stop_all()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    save()
    shutil.copy(out, RESULTS / "latest.json")
    if args.out:
        shutil.copy(out, args.out)
    plots = report.plots(results, args.plots_dir)
    text = report.table(results)
    for key in report.keys(results):
        for profile in (results.get(key) or {}).get("profiles", []):
            text += "\n" + report.profile_summary(Path(profile))
    (run_dir / "summary.md").write_text(text)
    print(text)
    print(f"results: {out}; plots: {', '.join(str(p) for p in plots)}")
    return 0 if report.correct(results) else 1


if __name__ == "__main__":
    sys.exit(main())
