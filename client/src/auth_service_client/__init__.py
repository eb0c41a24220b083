"""auth-service-client: verify auth-service tokens the one way.

- ``AuthClient`` / ``SyncAuthClient``: ask the service (``/validate``, batches, RFC 7662
  introspection, client-credentials tokens), with retries, a circuit breaker and an optional
  short positive cache.
- ``LocalVerifier``: verify locally against JWKS with the contract's rules and reasons, and
  (``revocations=True``) refuse revoked tokens as the revocation stream reports them.
- ``auth_service_client.web``: FastAPI/Starlette dependencies, middleware and WebSocket
  helpers (the ``[fastapi]`` extra).
"""

from auth_service_client.breaker import CircuitBreaker
from auth_service_client.errors import (
    AuthServiceError,
    CircuitOpenError,
    InvalidClientError,
    RequestRejectedError,
    ServiceUnavailableError,
)
from auth_service_client.remote import AuthClient
from auth_service_client.sync import SyncAuthClient
from auth_service_client.types import REASONS, Check, RevocationSource, Verdict
from auth_service_client.verifier import LocalVerifier

__all__ = [
    "REASONS",
    "AuthClient",
    "AuthServiceError",
    "Check",
    "CircuitBreaker",
    "CircuitOpenError",
    "InvalidClientError",
    "LocalVerifier",
    "RequestRejectedError",
    "RevocationSource",
    "ServiceUnavailableError",
    "SyncAuthClient",
    "Verdict",
]
