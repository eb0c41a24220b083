"""Fixtures of the crypto tests."""

from __future__ import annotations

import pytest

from auth_service.crypto.jwk import generate_rsa_key
from tests.support.jwt import Keys


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(real=generate_rsa_key(2048), attacker=generate_rsa_key(2048))
