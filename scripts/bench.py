"""`make bench`: the service as a real uvicorn process (one worker, core 0) on a fresh PostgreSQL
database + Redis, driven by wrk (one thread, core 1). Prints requests/s, p50/p99 latency and
errors per scenario, then the targets' verdicts (information: the exit status is 0 unless the
harness fails or a request errs).

(a) bare JSON GET /health/live, the ceiling; JWKS (full and 304, issue 2);
(b) POST /validate cycling through 1,000 distinct access tokens of 100 users;
(b-cold) (b) against a second process with AUTH_VALIDATION_CACHE_SIZE=0: every token's
header is parsed and its RSA signature verified on every request; revocation is still enforced
through the in-memory mirror (a revocation mechanism, not a verification cache);
(b-cold-store) the same with AUTH_REVOCATION_MIRROR=false as well: one Redis round trip a
request (for information, no target);
(c) POST /validate/batch, 100 tokens a request; (d) POST /auth/refresh, every token unused;
(g) POST /oauth/introspect over (b)'s tokens (alternating with (a) and (b)); (m) (b) against
the same app without the security headers (scripts/bench/plain_app.py), in the same rounds:
what the headers cost /validate; (p) likewise (b) against AUTH_METRICS_ENABLED=false: what
the metrics cost /validate; (h) POST
/oauth/token, client credentials with the client's secret already verified;
(e) POST /auth/login at the production argon2 cost, against cores / one hash time;
(b-under-e) (b) and (e) at once: (b)'s p99 while logins run versus idle;
(f) a login flood (made-up emails, random X-Forwarded-For) on its own server: a real user's
login and an unverified client's /validate, idle versus under the flood (scripts/bench/flood.py).
`--only f` runs (f) alone (about a minute), `--only a-e` the rest.
(a) and (b) run --rounds times (default 3), alternating, and (d) as many times, each round on
its own share of the tokens; each of their figures is the median over the rounds, so a burst
of noise on a shared host moves one round, not the verdict.
Scripts and helpers: scripts/bench/ (benchkit.py, scenarios.py, *.lua).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import client_bench
import flood
from benchkit import (
    BARE_APP,
    BIN,
    ONE_WRITE,
    WRK_CPU,
    Result,
    Server,
    Wrk,
    admin,
    argon2_hash_seconds,
    drop_redis_prefix,
    hash_parameters,
    median_of,
    run_wrk,
)
from hotpaths import WORKER_CONNECTIONS, run_workers
from memory import run_rss
from printout import report
from scenarios import check_validation, make_fixtures, server_etag, write_lines
from targets import BATCH, SERVER_CORES

PG_ADMIN = os.environ.get(
    "AUTH_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS = os.environ.get("AUTH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
LOGIN_CONNECTIONS = 8  # logins queue on the argon2 pool: more connections only add latency
REFRESH_CONNECTIONS = 8
LOGIN_UNDER_LOAD_CONNECTIONS = 4

# Settings the scenarios need, beyond a production-like default configuration.
BENCH_SETTINGS = {
    "AUTH_ACCESS_TOKEN_TTL_SECONDS": "3600",  # every token lives through the whole run
    "AUTH_LOGIN_FAILURE_LIMIT": "1000000",  # setup and (e) log in thousands of times
    "AUTH_LOGIN_ACCOUNT_FAILURE_LIMIT": "1000000",
    "AUTH_LOGIN_IP_LIMIT": "1000000",  # setup: 100 users, 1,000 logins, all from 127.0.0.1
    "AUTH_REGISTER_IP_LIMIT": "1000000",
    "AUTH_CLIENT_AUTH_FAILURE_LIMIT": "1000000",  # (f) sets every *_LIMIT back to its default
    # The default (30 s): when a verified client secret lapses under load, one request re-runs
    # argon2 and the others wait for it (single-flight), so a run sees that cost once or not.
    "AUTH_CLIENT_AUTH_CACHE_SECONDS": "30",
}


def service_env(database_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    cost = hash_parameters()
    env.update(
        AUTH_DATABASE_URL=database_url,
        AUTH_REDIS_URL=REDIS,
        AUTH_REDIS_KEY_PREFIX=prefix,
        AUTH_KEY_ENCRYPTION_SECRET=subprocess.run(
            [BIN / "auth-service", "gen-secret"], check=True, capture_output=True, text=True
        ).stdout.strip(),
        AUTH_SCHEDULER_ENABLED="false",
        AUTH_PASSWORD_HASH_MEMORY_KIB=str(cost["memory_kib"]),
        AUTH_PASSWORD_HASH_TIME_COST=str(cost["time_cost"]),
        AUTH_PASSWORD_HASH_PARALLELISM=str(cost["parallelism"]),
        **BENCH_SETTINGS,
    )
    return env


def run_scenarios(
    args: argparse.Namespace, env: dict[str, str], workdir: Path, hash_seconds: float
) -> tuple[dict[str, Result], int]:
    seconds, refresh_seconds, conns = args.seconds, args.refresh_seconds, args.connections
    servers: list[Server] = []
    loads: list[Wrk] = []
    results: dict[str, Result] = {}
    try:
        logs = workdir  # each server's stderr: its access lines and whatever else it says
        server = Server(env, log=logs / "service.log")
        servers.append(server)
        base = server.start().base
        print("setup: 100 users registered and logged in 10 times each (argon2, ~1 min)...")
        data = make_fixtures(base, env)
        tokens = write_lines(workdir / "access.txt", data.access_tokens)
        logins = write_lines(workdir / "logins.txt", [f"{e}\t{p}" for e, p in data.credentials])
        token_size = max(len(t) for t in data.access_tokens)
        check_validation(base, data.basic, data.access_tokens)
        validate = {
            "script": "validate.lua",
            "headers": {"Authorization": data.basic},
            "script_args": (str(tokens),),
        }
        etag = server_etag(base)

        def run(
            key: str, name: str, url: str, on: Server | None = None, **options: object
        ) -> Result:
            print(f"running {name} ...", flush=True)
            results[key] = run_wrk(name, url, server=on or server, **options)
            return results[key]

        run(
            "jwks",
            "JWKS: GET /.well-known/jwks.json",
            f"{base}/.well-known/jwks.json",
            seconds=seconds,
            connections=conns,
        )
        run(
            "jwks304",
            "JWKS 304: If-None-Match",
            f"{base}/.well-known/jwks.json",
            seconds=seconds,
            connections=conns,
            headers={"If-None-Match": etag},
        )
        # (a) and (b) alternate, ROUNDS times each: their ratios compare the same moments of
        # the host, and each figure is the median over the rounds.
        introspect = {**validate, "script_args": (str(tokens), "introspect")}
        # The ceiling, and (m), (p), (q): (b) against a variant of the app, in the same rounds.
        ceiling = Server(env, app_factory=BARE_APP, log=logs / "bare.log")
        ceiling1 = Server(env, app_factory=BARE_APP, http=ONE_WRITE, log=logs / "bare1.log")
        variants = {
            "m": Server(env, app_factory="plain_app:without_security_headers", log=logs / "m.log"),
            "p": Server(env, log=logs / "p.log", AUTH_METRICS_ENABLED="false"),
            "q": Server(env, log=logs / "q.log", AUTH_ACCESS_LOG="false"),
        }
        servers.append(ceiling.start())
        servers.append(ceiling1.start())
        for variant in variants.values():
            servers.append(variant)
            variant.start()
            check_validation(variant.base, data.basic, data.access_tokens)
        pairs: dict[str, list[Result]] = {
            key: [] for key in ("bare", "bare1", "a", "b", "g", *variants)
        }
        for round_number in range(1, args.rounds + 1):
            print(f"running (a) and (b), round {round_number} of {args.rounds} ...", flush=True)
            for key, bare in (("bare", ceiling), ("bare1", ceiling1)):
                pairs[key].append(
                    run_wrk(
                        f"({key})",
                        f"{bare.base}/ping",
                        server=bare,
                        seconds=seconds,
                        connections=conns,
                    )
                )
            pairs["a"].append(
                run_wrk(
                    "(a)", f"{base}/health/live", server=server, seconds=seconds, connections=conns
                )
            )
            pairs["b"].append(
                run_wrk(
                    "(b)",
                    f"{base}/validate",
                    server=server,
                    seconds=seconds,
                    connections=conns,
                    **validate,
                )
            )
            pairs["g"].append(
                run_wrk(
                    "(g)",
                    f"{base}/oauth/introspect",
                    server=server,
                    seconds=seconds,
                    connections=conns,
                    **introspect,
                )
            )
            for key, variant in variants.items():
                pairs[key].append(
                    run_wrk(
                        f"({key})",
                        f"{variant.base}/validate",
                        server=variant,
                        seconds=seconds,
                        connections=conns,
                        **validate,
                    )
                )
        for variant in [ceiling, ceiling1, *variants.values()]:
            variant.stop()
        results["bare"] = median_of("(bare) a bare FastAPI app: GET /ping", pairs["bare"])
        results["bare1"] = median_of(
            "(bare1) the same app on serve's one-write HTTP protocol", pairs["bare1"]
        )
        results["a"] = median_of("(a) the service's GET /health/live", pairs["a"])
        results["b"] = median_of("(b) POST /validate, 1,000 tokens", pairs["b"])
        results["g"] = median_of("(g) POST /oauth/introspect, same tokens", pairs["g"])
        results["m"] = median_of("(m) (b) without the security headers", pairs["m"])
        results["p"] = median_of("(p) (b) with AUTH_METRICS_ENABLED=false", pairs["p"])
        results["q"] = median_of("(q) (b) with AUTH_ACCESS_LOG=false", pairs["q"])
        for key in variants:
            per_round = [
                b.requests_per_second / other.requests_per_second
                for b, other in zip(pairs["b"], pairs[key], strict=True)
            ]
            results[key].paired_ratio = sorted(per_round)[len(per_round) // 2]
            results[key].notes.append(
                f"(b)/({key}) per round: " + ", ".join(f"{ratio:.3f}" for ratio in per_round)
            )
        run(
            "h",
            "(h) POST /oauth/token, client credentials",
            f"{base}/oauth/token",
            seconds=seconds,
            connections=conns,
            script="token.lua",
            headers={"Authorization": data.basic},
        )

        cold_settings: list[tuple[str, str, dict[str, str]]] = [
            ("b-cold", "(b-cold) same, signature cache off", {}),
            (
                "b-cold-store",
                "(b-cold-store) same, signature cache and revocation mirror off",
                {"AUTH_REVOCATION_MIRROR": "false"},
            ),
        ]
        for key, label, extra in cold_settings:
            cold = Server(env, log=logs / f"{key}.log", AUTH_VALIDATION_CACHE_SIZE="0", **extra)
            servers.append(cold)
            cold.start()
            check_validation(cold.base, data.basic, data.access_tokens)
            run(
                key,
                label,
                f"{cold.base}/validate",
                on=cold,
                seconds=seconds,
                connections=conns,
                **validate,
            )
            cold.stop()

        r = run(
            "c",
            f"(c) POST /validate/batch, {BATCH} tokens",
            f"{base}/validate/batch",
            seconds=seconds,
            connections=conns,
            **{**validate, "script_args": (str(tokens), str(BATCH))},
        )
        r.notes.append(f"{BATCH * r.requests_per_second:,.0f} tokens/s")
        r = run(
            "e",
            "(e) POST /auth/login, argon2 m={memory_kib} t={time_cost} p={parallelism}".format(
                **hash_parameters()
            ),
            f"{base}/auth/login",
            seconds=seconds,
            connections=LOGIN_CONNECTIONS,
            script="login.lua",
            script_args=(str(logins),),
        )
        r.notes.append(
            f"target {0.60 * SERVER_CORES / hash_seconds:,.1f}/s = 0.60 x {SERVER_CORES} core "
            f"/ {hash_seconds * 1000:.1f} ms"
        )

        print("running (b-under-e) ...", flush=True)
        login = Wrk(
            "(e) logins alongside",
            f"{base}/auth/login",
            seconds=seconds + 1,
            connections=LOGIN_UNDER_LOAD_CONNECTIONS,
            script="login.lua",
            script_args=(str(logins),),
        )
        loads.append(login)
        under = Wrk(
            "(b-under-e) (b) while (e) runs (-c4)",
            f"{base}/validate",
            seconds=seconds,
            connections=conns,
            **validate,
        )
        loads.append(under)
        results["b-under-e"] = under.result()
        results["e-alongside"] = login.result()
        results["b-under-e"].notes.append(
            f"idle p99 {results['b'].p99_ms:.2f} ms; logins alongside: "
            f"{results['e-alongside'].requests_per_second:,.1f}/s, "
            f"{results['e-alongside'].errors} errors"
        )

        # (d) runs --rounds times, each round from its own share of the pre-minted tokens (no
        # token is presented twice): a refresh's CPU time varied from 1.5 to 3.1 ms between
        # 5 s runs on an idle host, so one run is not a verdict (docs/benchmarks.md).
        shares = [data.refresh_tokens[i :: args.rounds] for i in range(args.rounds)]
        refreshes = []
        for number, share in enumerate(shares, start=1):
            pool = write_lines(workdir / f"refresh-{number}.txt", share)
            print(f"running (d), round {number} of {args.rounds} ...", flush=True)
            refreshes.append(
                run_wrk(
                    "(d)",
                    f"{base}/auth/refresh",
                    server=server,
                    seconds=refresh_seconds,
                    connections=REFRESH_CONNECTIONS,
                    script="refresh.lua",
                    script_args=(str(pool),),
                )
            )
        r = results["d"] = median_of(
            "(d) POST /auth/refresh, unused tokens", refreshes, paired=False
        )
        r.notes.append(f"{len(shares[0]):,} pre-minted tokens a round, then their successors")
        print("running (r), the worker's RSS over 1,000,000 distinct tokens (~2 min) ...")
        fresh = Server(env, log=logs / "r.log")  # as shipped, nothing validated before
        servers.append(fresh)
        fresh.start()
        assert fresh.process is not None
        results["r"] = run_rss(fresh.base, fresh.process.pid, data.basic)
        fresh.stop()
        results["w1"], results["w2"] = run_workers(
            env,
            data.basic,
            data.access_tokens,
            validate,
            seconds=seconds,
            rounds=args.rounds,
            logs=logs,
        )
        # (l): a second instance, the stream a verifier follows
        second = Server(env, log=logs / "second.log")
        servers.append(second)
        second.start()
        print("running (i)-(l), the client library ...", flush=True)
        results.update(
            client_bench.run_pinned(base, second.base, data.basic, tokens, logins, WRK_CPU)
        )
        return results, token_size
    finally:
        for load in loads:
            load.stop()
        for server in servers:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, help="seconds per scenario (default 10; (d) 5)")
    parser.add_argument("--quick", action="store_true", help="3 s per scenario, to try it out")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds of (a) and (b) (default 3)"
    )
    parser.add_argument("--only", choices=["a-e", "f"], help="(a)-(e) only, or (f) only")
    args = parser.parse_args()
    if args.seconds is not None and args.seconds < 1:
        parser.error("--seconds must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    default = 3 if args.quick else None
    args.refresh_seconds = args.seconds or default or 5
    args.seconds = args.seconds or default or 10

    hash_seconds = argon2_hash_seconds(**hash_parameters(), samples=20)
    database = f"auth_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"authbench:{database}:"
    admin(PG_ADMIN, f'CREATE DATABASE "{database}"')
    results: dict[str, Result] = {}
    token_size, flooded = 0, None
    try:
        env = service_env(PG_ADMIN.rsplit("/", 1)[0] + "/" + database, prefix)
        subprocess.run([BIN / "auth-service", "migrate"], env=env, check=True, capture_output=True)
        if args.only != "f":
            with tempfile.TemporaryDirectory(prefix="auth-bench-") as workdir:
                results, token_size = run_scenarios(args, env, Path(workdir), hash_seconds)
        if args.only != "a-e":
            flooded = flood.run_flood(env, BENCH_SETTINGS, args.seconds)
            results["f"] = flooded.flood
    finally:
        admin(PG_ADMIN, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        try:
            drop_redis_prefix(REDIS, prefix)
        except Exception as exc:  # the numbers stand; say what was left behind
            print(f"bench: could not delete the Redis keys {prefix}*: {exc}", file=sys.stderr)

    connections = {"d": REFRESH_CONNECTIONS, "e": LOGIN_CONNECTIONS, "w": WORKER_CONNECTIONS}
    report(args, results, hash_seconds, token_size, flooded, connections)
    failed = [r.name for r in results.values() if r.errors]
    if failed:
        print(f"\nbench: requests failed in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
