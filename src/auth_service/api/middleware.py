"""Pure ASGI middleware (cheap on the hot path): request ids and the request-size limit."""

from __future__ import annotations

import json
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _error_response(status: int, code: str, description: str) -> tuple[Message, Message]:
    body = json.dumps({"error": code, "error_description": description}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"connection", b"close"),  # stop reading whatever the client still sends
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class RequestContextMiddleware:
    """Gives each request an id (``X-Request-ID``, echoed when it is safe) and caps body size.

    A declared ``Content-Length`` over the cap is refused before reading; a chunked body is
    counted as it streams and refused with 413 the moment it passes the cap.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        declared = self._content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            for message in _error_response(413, "request_too_large", self._too_large()):
                await send_with_id(message)
            return

        received = 0
        rejected = False

        async def guarded_send(message: Message) -> None:
            if not rejected:  # once 413 is sent, nothing the app says reaches the client
                await send_with_id(message)

        async def counting_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    for reply in _error_response(413, "request_too_large", self._too_large()):
                        await send_with_id(reply)
                    rejected = True
                    return {"type": "http.disconnect"}
            return message

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not rejected:
                raise

    def _too_large(self) -> str:
        return f"The request body is larger than {self.max_body_bytes} bytes."

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                candidate: str = value.decode("latin-1")
                if _SAFE_REQUEST_ID.fullmatch(candidate):
                    return candidate
        return secrets.token_hex(8)

    @staticmethod
    def _content_length(scope: Scope) -> int | None:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None
