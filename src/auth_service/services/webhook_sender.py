"""Sends the webhook outbox: claim due rows briefly, post outside any transaction, record.

Every instance runs one sender. A claim moves the row's ``next_attempt_at`` one lease ahead in
a short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two instances never claim
one row); if the sender dies the lease runs out and any instance retries. A post is signed
per the Standard Webhooks scheme with the ``standardwebhooks`` package; a 2xx is delivered,
anything else is retried after 2^attempts seconds (at most an hour), up to ``MAX_ATTEMPTS``.

A claimed batch is posted concurrently, each post bounded by ``DEADLINE`` in all (a receiver
that drips its answer cannot hold the sender, nor outlive the lease so that a second instance
sends the same message); the response body is never read (only its status matters). An
endpoint deleted after the claim gets nothing: the claim only takes rows of live endpoints.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from auth_service.clock import Clock
from auth_service.crypto.envelope import Envelope, EnvelopeError
from auth_service.db.models import WebhookDelivery, WebhookEndpoint
from auth_service.db.session import Database
from auth_service.errors import InvalidRequestError
from auth_service.services.webhooks import check_url, internal_address

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
LEASE = timedelta(seconds=60)
BATCH = 10
DEADLINE = 10.0  # seconds for one whole post: well inside LEASE
_TIMEOUT = httpx.Timeout(5.0)


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: str
    url: str
    secret_sealed: bytes
    endpoint_id: str
    body: bytes
    attempts: int


async def _resolves_internally(url: str) -> bool:
    """Whether the URL's host resolves to any internal address (production: a public name
    pointed at the metadata service or a private network is not posted to). Checked before
    each post; a resolver that changes its answer between this and the connect is not
    covered (no pinning of the address)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = await asyncio.to_thread(socket.getaddrinfo, host, parts.port or 443)
    except (OSError, UnicodeError, ValueError):
        return False  # the post fails on its own, and is recorded and retried
    return any(internal_address(str(info[4][0])) for info in infos)


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(2**attempts, 3600))


class WebhookSender:
    def __init__(
        self,
        db: Database,
        envelope: Envelope,
        clock: Clock,
        *,
        production: bool,
        poll_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._db = db
        self._envelope = envelope
        self._clock = clock
        self._production = production
        self._poll = poll_seconds
        self._transport = transport

    async def run(self) -> None:
        """Until cancelled; a failure of one round is logged and the next round runs."""
        async with httpx.AsyncClient(
            timeout=_TIMEOUT,
            follow_redirects=False,
            trust_env=False,  # no proxy or netrc from the environment for security events
            transport=self._transport,
        ) as http:
            while True:
                try:
                    sent = await self.send_due(http)
                except Exception:
                    log.exception("webhook delivery round failed; retrying")
                    sent = 0
                if not sent:
                    await asyncio.sleep(self._poll)

    async def send_due(self, http: httpx.AsyncClient) -> int:
        claimed = await self._claim()
        outcomes = await asyncio.gather(
            *(self._deliver(http, delivery) for delivery in claimed), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                log.error("a webhook delivery failed unexpectedly: %s", type(outcome).__name__)
        return len(claimed)

    async def _deliver(self, http: httpx.AsyncClient, delivery: _Claimed) -> None:
        try:
            async with asyncio.timeout(DEADLINE):
                status, error = await self._post(http, delivery)
        except TimeoutError:
            status, error = None, f"no answer within {DEADLINE:g} s"
        except Exception as exc:  # recorded (so it backs off and is given up), never looping
            status, error = None, f"not sent: {type(exc).__name__}"
        await self._record(delivery, status, error)

    async def _claim(self) -> list[_Claimed]:
        now = self._clock.now()
        query = (
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.delivered_at.is_(None),
                WebhookDelivery.gave_up_at.is_(None),
                WebhookEndpoint.deleted_at.is_(None),
                WebhookDelivery.next_attempt_at <= now,
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(BATCH)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        )
        claimed: list[_Claimed] = []
        async with self._db.transaction() as db:
            for delivery, endpoint in (await db.execute(query)).all():
                delivery.next_attempt_at = now + LEASE
                body = json.dumps(delivery.payload, separators=(",", ":")).encode()
                claimed.append(
                    _Claimed(
                        delivery.id,
                        endpoint.url,
                        endpoint.secret_sealed,
                        str(endpoint.id),
                        body,
                        delivery.attempts,
                    )
                )
        return claimed

    async def _post(self, http: httpx.AsyncClient, delivery: _Claimed) -> tuple[int | None, str]:
        try:
            url = check_url(delivery.url, production=self._production)
            secret = self._envelope.open(
                delivery.secret_sealed, associated_data=delivery.endpoint_id
            ).decode()
        except (InvalidRequestError, EnvelopeError) as exc:
            return None, f"not sent: {type(exc).__name__}"
        if self._production and await _resolves_internally(url):
            return None, "not sent: the host resolves to an internal address"
        timestamp = self._clock.now()
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": Webhook(secret).sign(delivery.id, timestamp, delivery.body),
        }
        try:
            # Streamed and never read: a receiver's body, however large, stays on the wire.
            async with http.stream("POST", url, content=delivery.body, headers=headers) as answer:
                status = answer.status_code
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}"[:200]
        return status, "" if 200 <= status < 300 else f"HTTP {status}"

    async def _record(self, claimed: _Claimed, status: int | None, error: str) -> None:
        now = self._clock.now()
        async with self._db.transaction() as db:
            delivery = await db.get(WebhookDelivery, claimed.id, with_for_update=True)
            if delivery is None or delivery.delivered_at is not None:
                return
            delivery.attempts = claimed.attempts + 1
            delivery.last_status = status
            if status is not None and 200 <= status < 300:
                delivery.delivered_at = now
                delivery.last_error = None
                return
            delivery.last_error = error[:200]
            if delivery.attempts >= MAX_ATTEMPTS:
                delivery.gave_up_at = now
                log.warning("webhook %s given up after %s attempts", claimed.id, MAX_ATTEMPTS)
            else:
                delivery.next_attempt_at = now + backoff(delivery.attempts)
