"""Liveness and readiness bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Liveness(BaseModel):
    status: Literal["ok"]


class ReadinessChecks(BaseModel):
    database: Literal["ok", "failing"]
    store: Literal["ok", "failing"]
    signing_key: Literal["ok", "failing"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: ReadinessChecks


class ReadinessFailure(Readiness):
    error: Literal["service_unavailable"]
    error_description: str
