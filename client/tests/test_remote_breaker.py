"""The circuit breaker on its own, with an injected clock (no sleeping)."""

from __future__ import annotations

import threading

import pytest

from auth_service_client.breaker import CircuitBreaker
from auth_service_client.errors import CircuitOpenError, ServiceUnavailableError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with breaker.acquire() as permit:
            permit.failure()


def succeed(breaker: CircuitBreaker) -> None:
    with breaker.acquire() as permit:
        permit.success()


def opened(failures: int = 3, reset: float = 10.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    breaker = CircuitBreaker(failures, reset, time_source=clock)
    fail(breaker, failures)
    assert breaker.state == "open"
    return breaker, clock


def test_it_opens_after_n_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(3, 10.0, time_source=Clock())
    fail(breaker, 2)
    succeed(breaker)  # resets the count: not consecutive
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"


def test_while_open_it_fails_fast_with_circuit_open_error() -> None:
    breaker, clock = opened()
    clock.now += 9.9
    with pytest.raises(CircuitOpenError, match=r"next probe in 0\.1 s"):
        breaker.acquire()
    assert issubclass(CircuitOpenError, ServiceUnavailableError)


def test_after_the_cool_down_exactly_one_probe_goes_and_its_success_closes() -> None:
    breaker, clock = opened()
    clock.now += 10.0
    assert breaker.state == "half_open"
    probe = breaker.acquire()
    assert probe.probe
    for _ in range(3):  # concurrent callers during the probe fail fast
        with pytest.raises(CircuitOpenError, match="probed"):
            breaker.acquire()
    probe.success()
    assert breaker.state == "closed"
    succeed(breaker)


def test_a_failed_probe_reopens_for_a_whole_new_cool_down() -> None:
    breaker, clock = opened()
    clock.now += 15.0
    with breaker.acquire() as probe:
        probe.failure()
    assert breaker.state == "open"
    clock.now += 9.0
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.now += 1.0
    assert breaker.acquire().probe


def test_an_abandoned_probe_lets_the_next_caller_probe() -> None:
    breaker, clock = opened()
    clock.now += 10.0
    with pytest.raises(RuntimeError), breaker.acquire():
        raise RuntimeError("cancelled, or a bug: no outcome reported")
    probe = breaker.acquire()  # not stuck half-open with a probe that will never report
    assert probe.probe
    probe.success()
    assert breaker.state == "closed"


def test_outcomes_of_calls_from_before_a_state_change_are_ignored() -> None:
    clock = Clock()
    breaker = CircuitBreaker(2, 10.0, time_source=clock)
    slow = breaker.acquire()  # started while closed
    fail(breaker, 2)
    slow.success()  # a late success from before the outage does not close it
    assert breaker.state == "open"
    clock.now += 10.0
    probe = breaker.acquire()
    slow.failure()  # nor does a late failure count against the probe
    probe.success()
    assert breaker.state == "closed"


def test_an_outcome_is_counted_once_per_permit() -> None:
    breaker = CircuitBreaker(2, 10.0, time_source=Clock())
    with breaker.acquire() as permit:
        permit.failure()
        permit.failure()
    assert breaker.state == "closed"


def test_threads_racing_at_half_open_get_exactly_one_probe() -> None:
    breaker, clock = opened()
    clock.now += 10.0
    probes, refused = [], []
    start = threading.Barrier(32)

    def race() -> None:
        start.wait()
        try:
            probes.append(breaker.acquire())
        except CircuitOpenError:
            refused.append(1)

    threads = [threading.Thread(target=race) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(probes), len(refused)) == (1, 31)


def test_it_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError, match="reset_seconds"):
        CircuitBreaker(1, 0.0)
