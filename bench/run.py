"""Run the benchmarks of issues 6 and 12, of output archiving, of waiting, of costs, of
outgoing webhooks, of the dashboard's pages and of scaling out (issue 19); print the machine
and a table per benchmark.

    python -m bench.run --size smoke|full [--db postgresql|sqlite|both]
                        [--only ingest,reads,e2e,catalog,archive,waiters,costs,webhooks,ui,scaleout]
                        [--baseline REF]   # e2e against the service of another commit too

Exits non-zero when a benchmark breaks (lost callbacks, errors, timeouts, a sequential scan
in a list query's plan). Missed performance goals are printed, never fatal: the figures are
ratios against baselines measured in the same run, on a machine that may be busy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import traceback
from typing import Any

from bench import (
    archive,
    catalog,
    costs,
    e2e,
    ingest,
    profile,
    reads,
    scaleout,
    ui,
    waiters,
    webhooks,
)
from bench.common import (
    BACKENDS,
    BENCH_DIR,
    SIZES,
    BenchFailure,
    MemorySampler,
    machine_info,
    postgres_admin_url,
    postgres_version,
    print_machine,
    print_table,
    say,
)
from bench.ingest_app import FACTORY
from bench.loadgen import choose_generator

BENCHMARKS = (
    "ingest", "reads", "e2e", "catalog", "archive", "waiters", "costs", "webhooks", "ui",
    "scaleout",
)  # fmt: skip
# Benchmarks whose database only keeps bookkeeping: run once, on SQLite when it is chosen.
ONCE = frozenset({"archive"})
# Benchmarks of what only PostgreSQL does (LISTEN/NOTIFY across processes).
POSTGRES_ONLY = frozenset({"waiters", "scaleout"})
RSS_GOAL_MB = 150.0


DEFAULT_WORKERS = {"postgresql": 2, "sqlite": 1}


def backends_for(name: str, backends: list[str]) -> list[str]:
    if name in POSTGRES_ONLY:
        return [b for b in backends if b == "postgresql"]
    if name not in ONCE:
        return backends
    return ["sqlite"] if "sqlite" in backends else backends[:1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="smoke")
    parser.add_argument("--db", choices=[*BACKENDS, "both"], default="both")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help="comma-separated: " + ",".join(BENCHMARKS)
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="uvicorn workers for ingest (default: 2 on PostgreSQL, 1 on SQLite, whose one "
        "writer a second process can only compete for)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, help="callback concurrency (ingest, waiters)"
    )
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy one ingest worker during (a) and (c), the e2e service, the waiters' "
        "server during an extra loaded run, and the costs server during one more round of "
        "each variant; print where the time goes",
    )
    parser.add_argument(
        "--ingest-factory",
        default=FACTORY,
        help="module:callable of the ingest app; to measure a candidate change (it must "
        "serve the same routes as bench.ingest_app), put its module on PYTHONPATH",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        default=None,
        help="e2e only: run it a second time per backend against the service of this git "
        "commit (a temporary worktree, same virtualenv, same simulator) and compare; "
        "default: none",
    )
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    args.backends = list(BACKENDS) if args.db == "both" else [args.db]
    if args.baseline is not None and e2e.resolve_commit(args.baseline) is None:
        parser.error(f"--baseline {args.baseline}: not a commit of this repository")
    return args


async def main_async(args: argparse.Namespace) -> int:
    size = SIZES[args.size]
    started = time.monotonic()
    info = machine_info(await postgres_version(postgres_admin_url()))
    print(f"poyo-relay benchmarks, size {size.name}: {', '.join(args.only)} on "
          f"{', '.join(args.backends)}")  # fmt: skip
    print_machine(info)
    results: dict[str, Any] = {"size": size.name, "machine": info, "benchmarks": {}}
    if args.baseline is not None:
        results["baseline"] = args.baseline
        if "e2e" not in args.only:
            say(f"--baseline {args.baseline}: only e2e uses it, and e2e is not running")
    failures: list[str] = []
    generator = choose_generator(args.loadgen)
    if generator == "python" and {"ingest", "waiters"} & set(args.only):
        say("wrk not found: the asyncio load generator may not saturate the server")
    if args.profile and not profile.available():
        say("py-spy not found (pip install py-spy): profiling skipped")
    with MemorySampler() as sampler:
        for name in args.only:
            if not backends_for(name, args.backends):
                say(f"{name}: runs on PostgreSQL only, skipped (--db {args.db})")
            for backend in backends_for(name, args.backends):
                key = f"{name}[{backend}]"
                try:
                    if name == "ingest":
                        options = ingest.IngestOptions(
                            workers=args.workers or DEFAULT_WORKERS[backend],
                            concurrency=args.concurrency,
                            threads=args.wrk_threads,
                            generator=generator,
                            profile=args.profile,
                            profile_dir=BENCH_DIR / "results",
                            factory=args.ingest_factory,
                        )
                        outcome = await ingest.run_backend(backend, size, options, sampler)
                    elif name == "reads":
                        outcome = await reads.run_backend(backend, size, sampler)
                    elif name == "costs":
                        outcome = await costs.run_backend(
                            backend,
                            size,
                            sampler,
                            BENCH_DIR / "results" if args.profile else None,
                        )
                    elif name == "webhooks":
                        outcome = await webhooks.run_backend(
                            backend,
                            size,
                            sampler,
                            BENCH_DIR / "results" if args.profile else None,
                        )
                    elif name == "ui":
                        outcome = await ui.run_backend(backend, size, sampler)
                    elif name == "scaleout":
                        outcome = await scaleout.run_backend(backend, size, sampler)
                    elif name == "catalog":
                        outcome = await catalog.run_backend(backend, size, sampler)
                    elif name == "archive":
                        outcome = await archive.run_backend(backend, size, sampler)
                    elif name == "waiters":
                        waiting = waiters.WaitersOptions(
                            concurrency=args.concurrency,
                            threads=args.wrk_threads,
                            generator=generator,
                            profile=args.profile,
                            profile_dir=BENCH_DIR / "results",
                        )
                        outcome = await waiters.run_backend(backend, size, waiting, sampler)
                    else:
                        outcome = await e2e.run_backend(
                            backend,
                            size,
                            sampler,
                            BENCH_DIR / "results" if args.profile else None,
                            baseline=args.baseline,
                        )
                except BenchFailure as exc:
                    outcome = {"failures": [str(exc)]}
                except Exception as exc:
                    traceback.print_exc()
                    outcome = {"failures": [f"{type(exc).__name__}: {exc}"]}
                results["benchmarks"][key] = outcome
                for failure in outcome.get("failures", []):
                    failures.append(f"{key}: {failure}")
        memory = sampler.report()
    print_table(
        "memory (section 4): peak RSS per process while it ran",
        ("process", "peak RSS MB", f"goal <= {RSS_GOAL_MB:g}"),
        [(m["process"], m["peak_rss_mb"], _rss_verdict(m)) for m in memory],
    )
    results["memory"] = memory
    results["failures"] = failures
    results["seconds"] = round(time.monotonic() - started, 1)
    if not args.no_json:
        out = BENCH_DIR / "results" / f"bench-{size.name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
        say(f"results written to {out}")
    say(f"done in {results['seconds']:.0f}s")
    if failures:
        print("\nBENCHMARK FAILURES:", file=sys.stderr)
        for failure in failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    return 0


def _rss_verdict(measured: dict[str, Any]) -> str:
    if str(measured["process"]).startswith("waiters["):
        return "n/a (per waiter)"  # thousands of open connections: judged per waiter there
    return "met" if measured["peak_rss_mb"] <= RSS_GOAL_MB else "MISSED"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
