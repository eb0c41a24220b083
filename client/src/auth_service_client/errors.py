"""The library's errors. A token that is not valid is a ``Verdict``, never an exception:
these are for when no verdict could be had."""

from __future__ import annotations


class AuthServiceError(Exception):
    """Base class of every error this library raises."""


class ServiceUnavailableError(AuthServiceError):
    """The service could not be reached, timed out, or answered 5xx (after the retries)."""


class CircuitOpenError(ServiceUnavailableError):
    """The circuit breaker is open: the service failed repeatedly and is not asked again
    until the cool-down ends (then one probe is let through)."""


class RequestRejectedError(AuthServiceError):
    """The service refused the request itself (a 4xx): never retried."""

    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(f"{status} {code}: {message}" if message else f"{status} {code}")
        self.status = status
        self.code = code
        self.message = message


class InvalidClientError(RequestRejectedError):
    """401 ``invalid_client``: the client id or secret is wrong (or the client was deleted)."""
