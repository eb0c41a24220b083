"""The password policy (NIST SP 800-63B style: length, a block list and a strength estimate).

A password is refused, with a ``WeakPasswordError`` saying why, when it is:

- shorter than 12 characters (Unicode code points);
- longer than 1024 bytes in UTF-8 (or not encodable as UTF-8 at all);
- the account's email address, or the part of it before the ``@`` (case-insensitive);
- one of the 10,000 most common passwords (case-insensitive), shipped as package data in
  ``auth_service/data/common-passwords.tsv`` (``rank<TAB>password``, most common first;
  provenance in ``data/README.md``);
- (``PasswordPolicy.check`` only) rated below ``AUTH_PASSWORD_MIN_SCORE`` (0-4, default 3) by
  zxcvbn, told the email, its local part (whole, without separators, and each word of it),
  its domain labels and the service's names (``AUTH_TOTP_ISSUER_NAME`` and "auth-service").

``check_password`` runs the cheap rules alone (synchronous, microseconds); ``PasswordPolicy``
runs them, then zxcvbn. Descriptions never repeat the password.

What zxcvbn sees
----------------
zxcvbn is super-linear in the length (its dictionary matcher tries every substring) and, worse,
multiplies that by the number of "l33t" substitution tables the password's symbols allow
(``4 @ 8 ( { [ < 3 6 9 ! | 1 $ 5 + 7 % 2 0``: up to 368 tables). So it sees a prefix: at most
``MAX_SCORED_CHARS`` (100) characters, and fewer when the substitution tables times the squared
length would exceed ``MAX_SCORING_WORK`` (the shortest such prefix is 16 characters, past the
length rule). A longer password that passed the length rules is rated on that prefix alone,
and the refusal says so. Rating a prefix can only under-rate a password (a refusal the user
can fix by changing its start): zxcvbn's guess count only grows as characters are added.

Measured cost of one rating (zxcvbn 4.5.0, CPython 3.11, one core; mean of 20 calls)
------------------------------------------------------------------------------------
=================================================  ===============  =====================
password                                           zxcvbn uncapped  as rated here
=================================================  ===============  =====================
12 random printable characters                     0.3 ms           0.3-0.6 ms
``aaaaaaaaaaaa`` / ``password1234``                0.5 / 0.7 ms     0.6 / 0.8 ms
a 28-character passphrase                          1.7 ms           1.8 ms
64 random printable characters / 64 x ``a``        13 / 12 ms       12 / 12 ms
100 random printable (median / worst of 30)        190 / 990 ms     10 / 55 ms
100 x ``1``, ``ab`` x 50, ``0123456789`` x 10      57-70 ms         57-70 ms (all rated)
100 characters of l33t symbols (all 20 of them)    1,500 ms         50 ms (16 rated)
200 random printable characters                    15,600 ms        16 ms
worst of 300 random l33t-symbol mixes, 100 chars   --               80 ms
=================================================  ===============  =====================

That is well over a millisecond, so the rating runs off the event loop in a thread pool owned
by the policy (one worker: the ratings are pure Python and serialised by the GIL anyway, and
zxcvbn keeps the user inputs in a module-level dict, so calls must not overlap — a lock
guards it across policies too). The event loop still shares the GIL with that worker, so a
rating delays it by at most the interpreter's switch interval (5 ms) at a time. The pool is
bounded: a check that would find ``queue_limit`` (16) checks already waiting is refused at
once with ``ServerBusyError`` (503 ``server_busy``), never queued without end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from zxcvbn import matching as zxcvbn_matching
from zxcvbn import zxcvbn

from auth_service.errors import ServerBusyError, ServiceUnavailableError, WeakPasswordError

if TYPE_CHECKING:
    from auth_service.settings import Settings

MIN_LENGTH = 12
MAX_BYTES = 1024
COMMON_PASSWORDS_FILE = "common-passwords.tsv"
MAX_SCORED_CHARS = 100
MAX_SCORING_WORK = 100_000  # l33t substitution tables x characters rated, squared
SERVICE_NAME = "auth-service"
DEFAULT_QUEUE_LIMIT = 16
_MIN_INPUT_WORD = 3  # shorter words of the email would only add noise to the dictionary
_SEPARATORS = re.compile(r"[\s._+\-@]+")
_SENTENCE_BREAK = re.compile(r"\. (\w)")
_GENERIC_WEAKNESS = "This password is not strong enough; add another word or two."
_ZXCVBN_LOCK = threading.Lock()  # zxcvbn stores the user inputs in a module-level dict


@functools.cache
def common_passwords() -> frozenset[str]:
    """The common-password list, lower-cased; read from the package once per process."""
    text = (
        resources.files("auth_service")
        .joinpath("data")
        .joinpath(COMMON_PASSWORDS_FILE)
        .read_text(encoding="utf-8")
    )
    rows = (line.split("\t", 1) for line in text.splitlines() if line.strip())
    return frozenset(row[1] for row in rows if len(row) == 2)


def check_password(password: str, *, email: str | None) -> None:
    """Raise ``WeakPasswordError`` unless ``password`` meets the cheap rules for ``email``."""
    if len(password) < MIN_LENGTH:
        raise WeakPasswordError(f"The password must be at least {MIN_LENGTH} characters long.")
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        raise WeakPasswordError("The password must be valid Unicode text.") from None
    if size > MAX_BYTES:
        raise WeakPasswordError(f"The password must be at most {MAX_BYTES} bytes in UTF-8.")
    folded = password.casefold()
    if email:
        address = email.strip().casefold()
        local_part = address.rsplit("@", 1)[0] if "@" in address else address
        if folded in (address, local_part):
            raise WeakPasswordError(
                "The password must not be the email address or the part before its @."
            )
    if password.lower() in common_passwords():
        raise WeakPasswordError(
            "The password is one of the most commonly used passwords; choose another."
        )


@dataclass(frozen=True, slots=True)
class Strength:
    """zxcvbn's verdict on the rated prefix (``rated_chars`` long)."""

    score: int
    warning: str
    suggestions: tuple[str, ...]
    rated_chars: int
    uses_personal_words: bool  # a match against the email or the service's names


Scorer = Callable[[str, Sequence[str]], Strength]


def rated_prefix(password: str) -> str:
    """The part of ``password`` zxcvbn is shown: bounded in length and in l33t work."""
    prefix = password[:MAX_SCORED_CHARS]
    table = zxcvbn_matching.relevant_l33t_subtable(prefix, zxcvbn_matching.L33T_TABLE)
    tables = max(1, len(list(zxcvbn_matching.enumerate_l33t_subs(table))))
    if tables * len(prefix) ** 2 > MAX_SCORING_WORK:
        prefix = prefix[: math.isqrt(MAX_SCORING_WORK // tables)]
    return prefix


def rate_password(password: str, user_inputs: Sequence[str]) -> Strength:
    """zxcvbn on ``rated_prefix(password)`` given ``user_inputs`` (blocking: 0.3-70 ms)."""
    prefix = rated_prefix(password)
    with _ZXCVBN_LOCK:
        result = zxcvbn(prefix, user_inputs=list(user_inputs), max_length=len(prefix))
    feedback = result["feedback"]
    return Strength(
        score=int(result["score"]),
        warning=str(feedback.get("warning") or ""),
        suggestions=tuple(str(text) for text in feedback.get("suggestions") or ()),
        rated_chars=len(prefix),
        uses_personal_words=any(
            match.get("dictionary_name") == "user_inputs" for match in result["sequence"]
        ),
    )


def personal_words(email: str | None, service_names: Iterable[str]) -> tuple[str, ...]:
    """What an attacker knows about this account: the words zxcvbn must not credit."""
    texts: list[str] = []
    if email:
        address = email.strip().casefold()
        local_part, _, domain = address.rpartition("@") if "@" in address else (address, "", "")
        texts += [address, local_part, *domain.split(".")]
    texts += [name.strip().casefold() for name in service_names]
    words: dict[str, None] = {}  # ordered and unique
    for text in texts:
        parts = [part for part in _SEPARATORS.split(text) if part]
        for word in (text, "".join(parts), *parts):
            if len(word) >= _MIN_INPUT_WORD:
                words[word] = None
    return tuple(words)


def _clause(text: str) -> str:
    """One of zxcvbn's sentences as a clause: no final period, inner periods as commas."""
    text = _SENTENCE_BREAK.sub(lambda found: ", " + found.group(1).lower(), text.strip())
    text = text.rstrip(".")
    if text.startswith("This is "):
        text = "it is " + text.removeprefix("This is ")  # "because it is a very common password"
    return text[:1].lower() + text[1:]


def describe_weakness(strength: Strength, password_length: int) -> str:
    """One plain sentence saying why the password was refused; never quotes the password."""
    reasons: list[str] = []
    if strength.uses_personal_words:
        reasons.append("it is built from the email address or the name of this service")
    if strength.warning:
        reasons.append(_clause(strength.warning))
    advice = [_clause(text) for text in strength.suggestions[:2]] or [
        "add another word or two, uncommon words are better"
    ]
    because = f" because {' and '.join(reasons)}" if reasons else ""
    sentence = f"This password would be too easy to guess{because}; {'; '.join(advice)}"
    if strength.rated_chars < password_length:
        sentence += f" (only its first {strength.rated_chars} characters were rated)"
    return sentence + "."


def _not_quoting(password: str, description: str) -> str | None:
    """``description``, or a fixed one, whichever does not contain the password (None: the
    error's default). A password may be made of zxcvbn's own words ("too easy to guess")."""
    for candidate in (description, _GENERIC_WEAKNESS):
        if password.casefold() not in candidate.casefold():
            return candidate
    return None


class PasswordPolicy:
    """The whole policy: the cheap rules, then zxcvbn off the event loop, bounded."""

    def __init__(
        self,
        *,
        min_score: int = 3,
        service_names: Sequence[str] = (),
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        scorer: Scorer = rate_password,
    ) -> None:
        if not 0 <= min_score <= 4:
            raise ValueError("min_score must be between 0 and 4")
        if queue_limit < 0:
            raise ValueError("queue_limit must not be negative")
        self._min_score = min_score
        self._service_names = (*service_names, SERVICE_NAME)  # whatever it is called here
        self._scorer = scorer
        self._workers = 1
        # Running plus waiting ratings; released when the rating finishes or is cancelled.
        self._slots = threading.BoundedSemaphore(self._workers + queue_limit)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._workers, thread_name_prefix="password-policy"
        )
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordPolicy:
        return cls(
            min_score=settings.password_min_score,
            service_names=(settings.totp_issuer_name,),
        )

    async def check(self, password: str, *, email: str | None) -> None:
        """Raise WeakPasswordError (422 weak_password) with a reason in words a user understands.

        The cheap rules of ``check_password`` first; then zxcvbn rates the password given the
        email and the service's names. It rates at most the first ``MAX_SCORED_CHARS`` (100)
        characters, fewer for symbol-heavy passwords (``rated_prefix``): a longer password
        that passed the length rules is rated on that prefix alone. ``ServerBusyError`` (503)
        if ``queue_limit`` ratings are already waiting.
        """
        check_password(password, email=email)
        if self._min_score == 0:
            return  # every password scores at least 0: nothing to rate
        inputs = personal_words(email, self._service_names)
        strength = await self._run(functools.partial(self._scorer, password, inputs))
        if strength.score < self._min_score:
            raise WeakPasswordError(
                _not_quoting(password, describe_weakness(strength, len(password)))
            )

    async def _run(self, rate: Callable[[], Strength]) -> Strength:
        if self._closed:
            raise ServiceUnavailableError("The service is shutting down; retry in a moment.")
        if not self._slots.acquire(blocking=False):
            raise ServerBusyError("Too many password checks are waiting; retry in a moment.")
        try:
            future = self._executor.submit(rate)
        except BaseException:
            self._slots.release()
            raise
        # Exactly once per future, whether it ran, failed or was cancelled before it started.
        future.add_done_callback(lambda _: self._slots.release())
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Refuse new checks; the ones admitted finish in the background."""
        self._closed = True
        self._executor.shutdown(wait=False)


__all__ = [
    "MAX_BYTES",
    "MAX_SCORED_CHARS",
    "MIN_LENGTH",
    "PasswordPolicy",
    "Strength",
    "check_password",
    "common_passwords",
    "describe_weakness",
    "personal_words",
    "rate_password",
    "rated_prefix",
]
