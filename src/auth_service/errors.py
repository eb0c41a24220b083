"""The domain error tree. Services raise these; one handler in ``api/errors.py`` maps them.

    AuthError (code, status_code, description)
    ├── InvalidRequestError        400/422 invalid_request
    │   └── OAuthRequestError      400 invalid_request (the /oauth endpoints)
    ├── InvalidScopeError, UnsupportedGrantTypeError   400 (RFC 6749 §5.2)
    ├── NotFoundError              404 not_found
    ├── MethodNotAllowedError      405 method_not_allowed
    ├── RequestTooLargeError       413 request_too_large
    ├── UnsupportedMediaTypeError  415 unsupported_media_type
    ├── RateLimitedError           429 rate_limited (+ Retry-After)
    ├── UnauthorizedError          401 invalid_token
    │   ├── InvalidCredentialsError, InvalidClientError
    │   └── InvalidRefreshTokenError, RefreshTokenReusedError
    ├── MfaCodeRejectedError       400 invalid_mfa_code (TOTP setup and disable)
    ├── WeakPasswordError          422 weak_password
    ├── ForbiddenError             403 forbidden
    │   └── RegistrationClosedError, AccountDisabledError, CsrfFailedError
    ├── ConflictError              409
    │   └── EmailTakenError, RotationInProgressError
    ├── ServiceUnavailableError    503 service_unavailable (+ Retry-After)
    │   └── ServerBusyError        503 server_busy: the hashing queue is full
    └── ServerError                500 server_error
    ConfigurationError             not an HTTP error: the service must not start

No FastAPI import here: the services layer stays framework-free.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TOO_LARGE = "request_too_large"
    RATE_LIMITED = "rate_limited"
    INVALID_TOKEN = "invalid_token"  # noqa: S105  (an error code, not a secret)
    INVALID_CLIENT = "invalid_client"
    INVALID_CREDENTIALS = "invalid_credentials"
    FORBIDDEN = "forbidden"
    ROTATION_IN_PROGRESS = "rotation_in_progress"
    EMAIL_TAKEN = "email_taken"
    WEAK_PASSWORD = "weak_password"  # noqa: S105  (an error code)
    REGISTRATION_CLOSED = "registration_closed"
    ACCOUNT_DISABLED = "account_disabled"
    INVALID_REFRESH_TOKEN = "invalid_refresh_token"  # noqa: S105  (an error code)
    REFRESH_TOKEN_REUSED = "refresh_token_reused"  # noqa: S105  (an error code)
    INVALID_MFA_CODE = "invalid_mfa_code"
    INVALID_MFA_TOKEN = "invalid_mfa_token"  # noqa: S105  (an error code)
    MFA_ALREADY_ENABLED = "mfa_already_enabled"
    INVALID_RESET_TOKEN = "invalid_reset_token"  # noqa: S105  (an error code)
    SERVICE_UNAVAILABLE = "service_unavailable"
    SERVER_BUSY = "server_busy"
    SERVER_ERROR = "server_error"
    INVALID_SCOPE = "invalid_scope"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    CSRF_FAILED = "csrf_failed"
    LAST_ADMIN = "last_admin"
    MFA_NOT_ENABLED = "mfa_not_enabled"
    EMAIL_NOT_VERIFIED = "email_not_verified"
    INVALID_VERIFICATION_TOKEN = "invalid_verification_token"  # noqa: S105  (an error code)
    INVALID_INVITATION = "invalid_invitation"


class AuthError(Exception):
    code: ErrorCode = ErrorCode.SERVER_ERROR
    status_code: int = 500
    description: str = "The server could not complete the request."

    def __init__(self, description: str | None = None, *, code: ErrorCode | None = None) -> None:
        if description is not None:
            self.description = description
        if code is not None:
            self.code = code
        super().__init__(self.description)

    @property
    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequestError(AuthError):
    code = ErrorCode.INVALID_REQUEST
    status_code = 422
    description = "The request is malformed."


class OAuthRequestError(InvalidRequestError):
    """A malformed request to an RFC 6749 endpoint: 400, as RFC 6749 §5.2 says."""

    status_code = 400


class InvalidScopeError(AuthError):
    code = ErrorCode.INVALID_SCOPE
    status_code = 400
    description = "The requested scope is invalid, unknown, or not allowed for this client."


class UnsupportedGrantTypeError(AuthError):
    code = ErrorCode.UNSUPPORTED_GRANT_TYPE
    status_code = 400
    description = "Only grant_type=client_credentials is supported."


class NotFoundError(AuthError):
    code = ErrorCode.NOT_FOUND
    status_code = 404
    description = "Not found."


class MethodNotAllowedError(AuthError):
    code = ErrorCode.METHOD_NOT_ALLOWED
    status_code = 405
    description = "Method not allowed."


class RequestTooLargeError(AuthError):
    code = ErrorCode.REQUEST_TOO_LARGE
    status_code = 413
    description = "The request body is too large."


class UnsupportedMediaTypeError(AuthError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    status_code = 415
    description = "The body must be application/json."


class RateLimitedError(AuthError):
    code = ErrorCode.RATE_LIMITED
    status_code = 429
    description = "Too many requests; retry later."

    def __init__(
        self, retry_after_seconds: int, description: str | None = None, *, limiter: str = "other"
    ) -> None:
        super().__init__(description)
        self.retry_after_seconds = max(1, retry_after_seconds)
        self.limiter = limiter  # a bounded name, for the metrics (store_keys.limiter_name)

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class UnauthorizedError(AuthError):
    code = ErrorCode.INVALID_TOKEN
    status_code = 401
    description = "Authentication failed."

    @property
    def headers(self) -> dict[str, str]:
        if self.code is ErrorCode.INVALID_CLIENT:
            return {"WWW-Authenticate": 'Basic realm="auth-service"'}
        return {"WWW-Authenticate": f'Bearer error="{self.code.value}"'}


class InvalidCredentialsError(UnauthorizedError):
    code = ErrorCode.INVALID_CREDENTIALS
    description = "The email or password is wrong."


class InvalidClientError(UnauthorizedError):
    code = ErrorCode.INVALID_CLIENT
    description = "Client authentication failed."


class InvalidRefreshTokenError(UnauthorizedError):
    code = ErrorCode.INVALID_REFRESH_TOKEN
    description = "The refresh token is unknown, expired or revoked."


class RefreshTokenReusedError(UnauthorizedError):
    code = ErrorCode.REFRESH_TOKEN_REUSED
    description = "The refresh token was already used; the session has been revoked."


class InvalidMfaTokenError(UnauthorizedError):
    code = ErrorCode.INVALID_MFA_TOKEN
    description = "The MFA token is unknown, used, expired or burned; log in again."


class InvalidMfaCodeError(UnauthorizedError):
    """A wrong second factor at login (``/auth/login/mfa``): 401."""

    code = ErrorCode.INVALID_MFA_CODE
    description = "The code is not valid."


class MfaCodeRejectedError(AuthError):
    """A wrong code while turning TOTP on or off (the caller is signed in): 400."""

    code = ErrorCode.INVALID_MFA_CODE
    status_code = 400
    description = "The code is not valid."


class InvalidResetTokenError(AuthError):
    code = ErrorCode.INVALID_RESET_TOKEN
    status_code = 400
    description = "The reset token is unknown, used or expired."


class InvalidVerificationTokenError(AuthError):
    code = ErrorCode.INVALID_VERIFICATION_TOKEN
    status_code = 400
    description = "The verification link is unknown, used or expired; ask for a new one."


class InvalidInvitationError(AuthError):
    code = ErrorCode.INVALID_INVITATION
    status_code = 400
    description = "The invitation is unknown, used, revoked, expired or for another address."


class WeakPasswordError(AuthError):
    code = ErrorCode.WEAK_PASSWORD
    status_code = 422
    description = "The password does not meet the policy."


class ForbiddenError(AuthError):
    code = ErrorCode.FORBIDDEN
    status_code = 403
    description = "You are not allowed to do this."


class RegistrationClosedError(ForbiddenError):
    code = ErrorCode.REGISTRATION_CLOSED
    description = "Registration is closed."


class AccountDisabledError(ForbiddenError):
    code = ErrorCode.ACCOUNT_DISABLED
    description = "This account is disabled."


class EmailNotVerifiedError(ForbiddenError):
    code = ErrorCode.EMAIL_NOT_VERIFIED
    description = (
        "Verify your email address first: open the link mailed to you, or ask for a new one."
    )


class CsrfFailedError(ForbiddenError):
    code = ErrorCode.CSRF_FAILED
    description = (
        "A request authenticated by the refresh cookie must carry X-CSRF-Token equal to the"
        " csrf_token the last login or refresh answered."
    )


class ConflictError(AuthError):
    status_code = 409


class EmailTakenError(ConflictError):
    code = ErrorCode.EMAIL_TAKEN
    description = "An account with this email already exists."


class MfaAlreadyEnabledError(ConflictError):
    code = ErrorCode.MFA_ALREADY_ENABLED
    description = "Two-factor authentication is already enabled; disable it first."


class LastAdminError(ConflictError):
    code = ErrorCode.LAST_ADMIN
    description = "This is the last enabled admin: make another admin first."


class MfaNotEnabledError(ConflictError):
    code = ErrorCode.MFA_NOT_ENABLED
    description = "Two-factor authentication is not enabled for this user."


class RotationInProgressError(ConflictError):
    code = ErrorCode.ROTATION_IN_PROGRESS
    description = "Another key rotation is in progress; retry shortly."


class ServiceUnavailableError(AuthError):
    code = ErrorCode.SERVICE_UNAVAILABLE
    status_code = 503
    description = "A dependency of the service is unavailable; retry shortly."

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class ServerBusyError(ServiceUnavailableError):
    """Too much password hashing is queued: refused at once rather than queued without end."""

    code = ErrorCode.SERVER_BUSY
    description = "The server is busy; retry in a moment."


class ServerError(AuthError):
    code = ErrorCode.SERVER_ERROR
    status_code = 500


class ConfigurationError(Exception):
    """The service must not start: the message is one line an operator can act on."""


class KeyDecryptionError(ConfigurationError):
    """Stored signing keys do not decrypt with the configured secret."""
