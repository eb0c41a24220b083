"""Issue 17's scenarios for scripts/bench.py: (w), `--workers 2` against one worker."""

from __future__ import annotations

from pathlib import Path

from benchkit import Result, Server, median_of, run_wrk
from scenarios import check_validation

WORKER_CONNECTIONS = 64  # enough to keep two workers busy


def run_workers(
    env: dict[str, str],
    basic: str,
    tokens: list[str],
    validate: dict[str, object],
    *,
    seconds: int,
    rounds: int,
    logs: Path,
) -> tuple[Result, Result]:
    """(w): /validate against `serve --workers 1` and `--workers 2`, both free to run on both
    cores, wrk too (there is no third core for it: its CPU time is in the notes), alternating
    ``rounds`` times; the medians."""
    servers = {
        count: Server(env, workers=count, cpus="0,1", log=logs / f"workers-{count}.log")
        for count in (1, 2)
    }
    runs: dict[int, list[Result]] = {1: [], 2: []}
    try:
        for server in servers.values():
            server.start()
            check_validation(server.base, basic, tokens)
        for round_number in range(1, rounds + 1):
            print(f"running (w), round {round_number} of {rounds} ...", flush=True)
            for count, server in servers.items():
                runs[count].append(
                    run_wrk(
                        f"(w{count})",
                        f"{server.base}/validate",
                        server=server,
                        seconds=seconds,
                        connections=WORKER_CONNECTIONS,
                        cpus="0,1",
                        **validate,
                    )
                )
    finally:
        for server in servers.values():
            server.stop()
    one = median_of("(w1) POST /validate, 1 worker, 2 cores shared with wrk", runs[1])
    two = median_of("(w2) POST /validate, --workers 2, 2 cores shared with wrk", runs[2])
    for result, key in ((one, 1), (two, 2)):
        cores = sorted(r.load_cpu_seconds / seconds for r in runs[key])[len(runs[key]) // 2]
        result.notes.append(f"wrk used {cores:.2f} of a core")
    return one, two
