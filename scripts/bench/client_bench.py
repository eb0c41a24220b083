"""The client library's figures (issue 13), run by `make bench` on the load core against the
service it started (instance A) and a second instance on the same database and Redis (B).

(i) ``LocalVerifier.verify`` against bare ``jwt.decode`` with the same key and the same
1,000 tokens, in this process (the verifier follows B's revocation stream meanwhile);
(j) ``AuthClient.validate`` answered by its positive cache (a token validated once, 5 s);
(k) ``AuthClient.validate_many`` against single ``validate`` calls, tokens/s, both with 8
requests in flight; (l) a logout on A until a local verifier following B refuses the token:
p99 over 100 logouts, timed from sending the logout (its own answer included: the
stream's event usually arrives before the logout's answer does). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from auth_service_client import AuthClient, LocalVerifier
from benchkit import Result, pin
from jwt.algorithms import RSAAlgorithm

IN_FLIGHT = 8
LOGOUTS = 100


def _credentials(basic: str) -> tuple[str, str]:
    client_id, _, secret = base64.b64decode(basic.removeprefix("Basic ")).decode().partition(":")
    return client_id, secret


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def bench_verify(a: str, b: str, auth: tuple[str, str], tokens: list[str]) -> dict[str, Any]:
    sample = _claims(tokens[0])
    issuer, audience = sample["iss"], sample["aud"]
    async with httpx.AsyncClient(timeout=10) as http:
        jwks = (await http.get(f"{a}/.well-known/jwks.json")).json()
    keys = {k["kid"]: RSAAlgorithm.from_jwk(k) for k in jwks["keys"]}
    headers = [jwt.get_unverified_header(t)["kid"] for t in tokens]
    rounds = 20

    def bare() -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            for token, kid in zip(tokens, headers, strict=True):
                jwt.decode(token, keys[kid], algorithms=["RS256"], audience=audience, issuer=issuer)
        return rounds * len(tokens) / (time.perf_counter() - started)

    async def local(cache_size: int) -> float:
        async with LocalVerifier(
            b,
            issuer=issuer,
            audience=audience,
            revocations=True,
            client_id=auth[0],
            client_secret=auth[1],
            cache_size=cache_size,
        ) as verifier:
            await verifier.start(wait_synced=10)
            for token in tokens:  # JWKS fetched, and (with a cache) signatures verified once
                assert (await verifier.verify(token)).valid
            started = time.perf_counter()
            for _ in range(rounds):
                for token in tokens:
                    await verifier.verify(token)
            return rounds * len(tokens) / (time.perf_counter() - started)

    bare_rate = bare()
    cached = await local(10_000)
    cold = await local(0)
    return {
        "bare_decode_per_s": bare_rate,
        "local_verify_per_s": cached,
        "local_verify_no_cache_per_s": cold,
    }


async def bench_remote(a: str, auth: tuple[str, str], tokens: list[str]) -> dict[str, Any]:
    async with AuthClient(a, *auth, cache_seconds=5) as client:
        assert (await client.validate(tokens[0])).valid
        calls = 200_000
        started = time.perf_counter()
        for _ in range(calls):
            await client.validate(tokens[0])
        hits = calls / (time.perf_counter() - started)
    async with AuthClient(a, *auth) as client:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(token: str) -> None:
            async with gate:
                assert (await client.validate(token)).valid

        started = time.perf_counter()
        await asyncio.gather(*(one(t) for t in tokens))
        single = len(tokens) / (time.perf_counter() - started)
        batches = [tokens[i : i + 100] for i in range(0, len(tokens), 100)] * 5

        async def many(chunk: list[str]) -> None:
            async with gate:
                assert all(v.valid for v in await client.validate_many(chunk))

        started = time.perf_counter()
        await asyncio.gather(*(many(c) for c in batches))
        batched = sum(map(len, batches)) / (time.perf_counter() - started)
    return {"cache_hits_per_s": hits, "single_tokens_per_s": single, "many_tokens_per_s": batched}


async def bench_logout(
    a: str, b: str, auth: tuple[str, str], credentials: list[tuple[str, str]]
) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        tokens = []
        for email, password in (credentials * LOGOUTS)[:LOGOUTS]:
            answer = await http.post(f"{a}/auth/login", json={"email": email, "password": password})
            answer.raise_for_status()
            tokens.append(answer.json()["access_token"])
        sample = _claims(tokens[0])
        delays = []
        async with LocalVerifier(
            b,
            issuer=sample["iss"],
            audience=sample["aud"],
            revocations=True,
            client_id=auth[0],
            client_secret=auth[1],
        ) as verifier:
            await verifier.start(wait_synced=10)
            for token in tokens:
                assert (await verifier.verify(token)).valid
                sent = time.perf_counter()  # from the logout request: it includes its answer
                answer = await http.post(
                    f"{a}/auth/logout", headers={"Authorization": f"Bearer {token}"}
                )
                assert answer.status_code == 204, answer.text
                while (await verifier.verify(token)).valid:
                    if time.perf_counter() - sent > 5:
                        raise RuntimeError("a logout did not reach the local verifier in 5 s")
                    await asyncio.sleep(0.001)
                delays.append(time.perf_counter() - sent)
    delays.sort()
    return {
        "logout_p50_ms": 1000 * statistics.median(delays),
        "logout_p99_ms": 1000 * delays[int(0.99 * (len(delays) - 1))],
        "logout_max_ms": 1000 * delays[-1],
    }


def run_pinned(
    a: str, b: str, basic: str, tokens: Path, logins: Path, cpu: int
) -> dict[str, Result]:
    """Run this script on ``cpu`` (the load core) and turn its figures into results."""
    output = subprocess.run(
        [
            *pin(cpu),
            sys.executable,
            __file__,
            "--a",
            a,
            "--b",
            b,
            "--basic",
            basic,
            "--tokens",
            str(tokens),
            "--credentials",
            str(logins),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    f = json.loads(output.strip().splitlines()[-1])
    return {
        "i": Result(
            "(i) LocalVerifier.verify, 1,000 tokens, in-process",
            f["local_verify_per_s"],
            0,
            0,
            0,
            0,
            [
                f"bare jwt.decode {f['bare_decode_per_s']:,.0f}/s; without its signature cache "
                f"{f['local_verify_no_cache_per_s']:,.0f}/s"
            ],
        ),
        "j": Result("(j) AuthClient.validate, cache hit", f["cache_hits_per_s"], 0, 0, 0, 0),
        "k": Result(
            "(k) AuthClient.validate_many, tokens/s",
            f["many_tokens_per_s"],
            0,
            0,
            0,
            0,
            [f"single validate {f['single_tokens_per_s']:,.0f} tokens/s ({IN_FLIGHT} in flight)"],
        ),
        "l": Result(
            f"(l) logout on A -> refused by a LocalVerifier on B's stream ({LOGOUTS} logouts)",
            0,
            f["logout_p50_ms"],
            f["logout_p99_ms"],
            0,
            LOGOUTS,
            [f"max {f['logout_max_ms']:.1f} ms"],
        ),
        "k-single": Result("single validate", f["single_tokens_per_s"], 0, 0, 0, 0),
        "i-bare": Result("bare jwt.decode", f["bare_decode_per_s"], 0, 0, 0, 0),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--basic", required=True)
    parser.add_argument("--tokens", type=Path, required=True)
    parser.add_argument("--credentials", type=Path, required=True)
    args = parser.parse_args()
    auth = _credentials(args.basic)
    tokens = args.tokens.read_text().split()
    credentials = [
        (line.split("\t")[0], line.split("\t")[1])
        for line in args.credentials.read_text().splitlines()
        if line
    ]
    figures: dict[str, Any] = {}
    figures.update(await bench_verify(args.a, args.b, auth, tokens))
    figures.update(await bench_remote(args.a, auth, tokens))
    figures.update(await bench_logout(args.a, args.b, auth, credentials))
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
