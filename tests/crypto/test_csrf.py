"""The CSRF binding across a master-secret rotation (SECURITY.md): tokens made under the
previous secret still check while it is configured, and stop when it is gone."""

from __future__ import annotations

from auth_service.crypto.csrf import CsrfBinding


def test_a_token_made_under_the_previous_secret_still_checks_during_a_rotation() -> None:
    old, new = "o" * 64, "n" * 64
    refresh = "a-refresh-token"
    before = CsrfBinding(old).token_for(refresh)
    assert CsrfBinding([new, old]).verify(refresh, before, before)
    assert not CsrfBinding([new]).verify(refresh, before, before)  # gone with the old secret
    assert CsrfBinding([new, old]).token_for(refresh) == CsrfBinding(new).token_for(refresh)
