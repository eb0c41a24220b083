"""Two commits side by side, for docs/benchmarks.md's before/after table (not part of `make bench`).

    git worktree add /tmp/before <commit>
    .venv/bin/python scripts/bench/compare.py /tmp/before/src [--rounds 3] [--seconds 10]

Serves the bare ceiling, the checkout's service ("after") and the service from the other
source tree ("before", through PYTHONPATH), each as shipped (one worker on core 0, no
`--log-level`), on one fresh database; then runs (b) /validate, (c) /validate/batch and (d)
/auth/refresh against each in alternating rounds (wrk on core 1) and prints the medians.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench
from benchkit import BARE_APP, BIN, Result, Server, admin, median_of, run_wrk
from scenarios import check_validation, make_fixtures, write_lines
from targets import BATCH


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before", type=Path, help="the other tree's src directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    database = f"auth_compare_{uuid.uuid4().hex[:8]}"
    admin(bench.PG_ADMIN, f'CREATE DATABASE "{database}"')
    servers: list[Server] = []
    try:
        env = bench.service_env(bench.PG_ADMIN.rsplit("/", 1)[0] + "/" + database, database)
        subprocess.run([BIN / "auth-service", "migrate"], env=env, check=True)
        work = Path(tempfile.mkdtemp(prefix="auth-compare-"))
        after = Server(env, log=work / "after.log").start()
        before = Server(env, log=work / "before.log", PYTHONPATH=str(args.before)).start()
        bare = Server(env, app_factory=BARE_APP, log=work / "bare.log").start()
        servers += [after, before, bare]
        data = make_fixtures(after.base, env)
        tokens = write_lines(work / "access.txt", data.access_tokens)
        half = len(data.refresh_tokens) // 2  # each side refreshes its own tokens
        refresh = {
            "after": write_lines(work / "r-after.txt", data.refresh_tokens[:half]),
            "before": write_lines(work / "r-before.txt", data.refresh_tokens[half:]),
        }
        for server in (after, before):
            check_validation(server.base, data.basic, data.access_tokens)
        validate = {
            "script": "validate.lua",
            "headers": {"Authorization": data.basic},
            "script_args": (str(tokens),),
        }
        batch = {**validate, "script_args": (str(tokens), str(BATCH))}
        runs: dict[str, list[Result]] = {}
        seconds = args.seconds
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number} of {args.rounds} ...", flush=True)
            runs.setdefault("bare", []).append(
                run_wrk("bare", f"{bare.base}/ping", seconds=seconds, connections=32)
            )
            for name, server in (("before", before), ("after", after)):
                url = server.base
                runs.setdefault(f"b {name}", []).append(
                    run_wrk(name, f"{url}/validate", seconds=seconds, connections=32, **validate)
                )
                runs.setdefault(f"c {name}", []).append(
                    run_wrk(name, f"{url}/validate/batch", seconds=seconds, connections=32, **batch)
                )
        for name, server in (("before", before), ("after", after)):  # once: tokens get used
            runs[f"d {name}"] = [
                run_wrk(
                    name,
                    f"{server.base}/auth/refresh",
                    seconds=5,
                    connections=8,
                    script="refresh.lua",
                    script_args=(str(refresh[name]),),
                )
            ]
    finally:
        for server in servers:
            server.stop()
        admin(bench.PG_ADMIN, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    ceiling = median_of("bare", runs["bare"]).requests_per_second
    print("| scenario | req/s | of bare | p50 ms | p99 ms | p99/p50 | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key, rounds in runs.items():
        r = median_of(key, rounds)
        print(
            f"| {key} | {r.requests_per_second:,.0f} | {r.requests_per_second / ceiling:.3f} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.p99_ms / r.p50_ms:.1f} | {r.errors} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
