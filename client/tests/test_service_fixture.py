"""The fixture the other tests build on: a served instance, a client, users and an admin."""

from __future__ import annotations

from conftest import Service


def test_a_user_token_validates_and_a_logout_revokes_it(service: Service) -> None:
    pair = service.login()
    assert service.validate(pair["access_token"])["valid"] is True
    service.logout(pair)
    assert service.validate(pair["access_token"]) == {"valid": False, "error": "token_revoked"}
