"""The targets `make bench` checks, each against figures measured in the same run."""

from __future__ import annotations

from benchkit import Result
from memory import RssResult

BATCH = 100  # tokens a /validate/batch request
SERVER_CORES = 1  # the service is pinned to one core (taskset -c 0)


def verdicts(results: dict[str, Result], hash_seconds: float) -> list[tuple[str, bool, str]]:
    a, b, cold, c = results["a"], results["b"], results["b-cold"], results["c"]
    e, under, bare = results["e"], results["b-under-e"], results["bare"]
    login_target = 0.60 * SERVER_CORES / hash_seconds
    return [
        *client_verdicts(results),
        *hot_path_verdicts(results),
        (
            "(b) >= 0.75 x (bare) req/s, as shipped",
            b.requests_per_second >= 0.75 * bare.requests_per_second,
            f"{b.requests_per_second:,.0f} vs {0.75 * bare.requests_per_second:,.0f} "
            f"({b.requests_per_second / bare.requests_per_second:.3f} of bare)",
        ),
        (
            "(b) CPU a request >= 0.75 x as cheap as (bare)'s (information: what a quiet host's "
            "throughput ratio would be)",
            b.server_cpu_us > 0 and bare.server_cpu_us / b.server_cpu_us >= 0.75,
            f"{b.server_cpu_us:,.0f} us vs {bare.server_cpu_us:,.0f} us "
            f"({bare.server_cpu_us / b.server_cpu_us if b.server_cpu_us else 0:.3f})",
        ),
        (
            "(b) >= 0.75 x (bare1) req/s (information: the ceiling on serve's own HTTP protocol,"
            " which writes each answer in one send())",
            b.requests_per_second >= 0.75 * results["bare1"].requests_per_second,
            f"{b.requests_per_second:,.0f} vs {0.75 * results['bare1'].requests_per_second:,.0f}"
            f" ({b.requests_per_second / results['bare1'].requests_per_second:.3f} of bare1)",
        ),
        (
            "(b) p99 <= 2 x (bare) p99",
            b.p99_ms <= 2 * bare.p99_ms,
            f"{b.p99_ms:.2f} ms vs {2 * bare.p99_ms:.2f} ms",
        ),
        (
            "(b) with the access log >= 0.97 x (q) without (median of per-round ratios)",
            (results["q"].paired_ratio or 0.0) >= 0.97,
            f"{results['q'].paired_ratio or 0.0:.3f}; medians {b.requests_per_second:,.0f} vs "
            f"{results['q'].requests_per_second:,.0f}",
        ),
        (
            "(b) with the security headers >= 0.97 x (m) without (median of per-round ratios)",
            (results["m"].paired_ratio or 0.0) >= 0.97,
            f"{results['m'].paired_ratio or 0.0:.3f}; medians {b.requests_per_second:,.0f} vs "
            f"{results['m'].requests_per_second:,.0f}",
        ),
        (
            "(b) with metrics >= 0.97 x (p) without (median of per-round ratios)",
            (results["p"].paired_ratio or 0.0) >= 0.97,
            f"{results['p'].paired_ratio or 0.0:.3f}; medians {b.requests_per_second:,.0f} vs "
            f"{results['p'].requests_per_second:,.0f}",
        ),
        (
            "(g) introspection >= 0.9 x (b) req/s",
            results["g"].requests_per_second >= 0.9 * b.requests_per_second,
            f"{results['g'].requests_per_second:,.0f} vs {0.9 * b.requests_per_second:,.0f}",
        ),
        (
            "(h) /oauth/token >= 1,000/s",
            results["h"].requests_per_second >= 1000,
            f"{results['h'].requests_per_second:,.0f}/s",
        ),
        (
            "(b-cold) >= 0.40 x (a) req/s",
            cold.requests_per_second >= 0.40 * a.requests_per_second,
            f"{cold.requests_per_second:,.0f} vs {0.40 * a.requests_per_second:,.0f}",
        ),
        (
            "(c) tokens/s >= 5 x (b) req/s",
            BATCH * c.requests_per_second >= 5 * b.requests_per_second,
            f"{BATCH * c.requests_per_second:,.0f} vs {5 * b.requests_per_second:,.0f}",
        ),
        (
            "(e) >= 0.60 x cores / hash time",
            e.requests_per_second >= login_target,
            f"{e.requests_per_second:,.1f}/s vs 0.60 x {SERVER_CORES} / "
            f"{hash_seconds * 1000:.1f} ms = {login_target:,.1f}/s",
        ),
        (
            "(b-under-e) p99 <= 3 x (b) idle p99",
            under.p99_ms <= 3 * b.p99_ms,
            f"{under.p99_ms:.2f} ms vs {3 * b.p99_ms:.2f} ms",
        ),
    ]


def hot_path_verdicts(results: dict[str, Result]) -> list[tuple[str, bool, str]]:
    """Issue 17's targets besides (b)'s: batch tail, refresh rate, workers, memory."""
    c, d = results["c"], results["d"]
    found = [
        (
            "(c) /validate/batch p99 <= 2 x its p50",
            c.p99_ms <= 2 * c.p50_ms,
            f"{c.p99_ms:.2f} ms vs 2 x {c.p50_ms:.2f} ms",
        ),
        (
            "(d) /auth/refresh >= 500/s on one worker",
            d.requests_per_second >= 500,
            f"{d.requests_per_second:,.0f}/s",
        ),
    ]
    if "w2" in results:
        one, two = results["w1"].requests_per_second, results["w2"].requests_per_second
        found.append(
            (
                "(w) --workers 2 >= 1.7 x one worker on /validate",
                two >= 1.7 * one,
                f"{two:,.0f} vs 1.7 x {one:,.0f} = {1.7 * one:,.0f} ({two / one:.2f}x)",
            )
        )
    memory = results.get("r")
    if isinstance(memory, RssResult):
        found.append(memory.verdict())
    return found


def client_verdicts(results: dict[str, Result]) -> list[tuple[str, bool, str]]:
    """Issue 13's targets, when (i)-(l) ran."""
    if "i" not in results:
        return []
    local, bare = results["i"].requests_per_second, results["i-bare"].requests_per_second
    many, single = results["k"].requests_per_second, results["k-single"].requests_per_second
    hits, logout = results["j"].requests_per_second, results["l"].p99_ms
    return [
        (
            "(i) LocalVerifier.verify >= 0.8 x bare jwt.decode",
            local >= 0.8 * bare,
            f"{local:,.0f}/s vs {0.8 * bare:,.0f}/s",
        ),
        ("(j) AuthClient.validate cache hit >= 100,000/s", hits >= 100_000, f"{hits:,.0f}/s"),
        (
            "(k) validate_many >= 5 x single validate, tokens/s",
            many >= 5 * single,
            f"{many:,.0f} vs {5 * single:,.0f}",
        ),
        ("(l) logout -> local decision p99 < 1 s", logout < 1000, f"{logout:.1f} ms"),
    ]
