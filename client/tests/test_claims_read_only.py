"""Verdicts are cached and shared between callers: their claims cannot be changed through one
caller's hands (each would otherwise change every later answer for the same token)."""

from __future__ import annotations

import json

import pytest

from auth_service_client.types import Claims, Verdict, freeze


def test_claims_from_the_service_are_read_only_yet_a_dict_for_json_and_equality() -> None:
    verdict = Verdict.from_json(
        {"valid": True, "claims": {"sub": "u1", "roles": ["user"], "x": {"y": [1]}}}
    )
    claims = verdict.claims
    assert isinstance(claims, Claims) and isinstance(claims, dict)
    for change in (
        lambda: claims.__setitem__("roles", ["admin"]),
        lambda: claims.update(roles=["admin"]),
        lambda: claims.setdefault("admin", True),
        lambda: claims.pop("sub"),
        lambda: claims.__delitem__("sub"),
        lambda: claims.clear(),
        lambda: claims.popitem(),
    ):
        with pytest.raises(TypeError):
            change()
    with pytest.raises(AttributeError):
        claims["roles"].append("admin")  # arrays are tuples
    assert claims["roles"] == ("user",)
    assert json.loads(json.dumps(claims)) == {"sub": "u1", "roles": ["user"], "x": {"y": [1]}}
    assert dict(claims) | {"extra": 1} == {**claims, "extra": 1}  # copies stay ordinary


def test_freeze_leaves_scalars_alone() -> None:
    assert freeze("a") == "a" and freeze(1.5) == 1.5 and freeze(None) is None
