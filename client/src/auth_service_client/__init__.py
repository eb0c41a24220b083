"""auth-service-client: verify auth-service tokens the one way."""

from auth_service_client.errors import (
    AuthServiceError,
    CircuitOpenError,
    InvalidClientError,
    RequestRejectedError,
    ServiceUnavailableError,
)
from auth_service_client.types import REASONS, Verdict

__all__ = [
    "REASONS",
    "AuthServiceError",
    "CircuitOpenError",
    "InvalidClientError",
    "RequestRejectedError",
    "ServiceUnavailableError",
    "Verdict",
]
