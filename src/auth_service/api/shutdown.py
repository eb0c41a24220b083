"""Ending the revocation streams when uvicorn is told to stop.

uvicorn waits for every open response to finish before it runs the lifespan's shutdown, and
a stream never finishes by itself: an instance with a follower connected would never stop.
So, while serving, SIGTERM and SIGINT first close the streams (the followers reconnect to
another instance and resume), then reach uvicorn's own handler as before. Only uvicorn's
handler is chained, only from the main thread, and it is put back when serving ends.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _is_uvicorns(handler: Any) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("uvicorn.")


def _chain(
    loop: asyncio.AbstractEventLoop, close: Callable[[], None], previous: Any
) -> Callable[[int, FrameType | None], None]:
    def chained(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(close)
        previous(signum, frame)

    return chained


@contextmanager
def on_exit_signal(close: Callable[[], None]) -> Iterator[None]:
    """Run ``close`` on the event loop when uvicorn gets an exit signal (then uvicorn's own
    handler runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    installed: dict[int, tuple[Any, Callable[[int, FrameType | None], None]]] = {}
    for sig in _SIGNALS:
        previous = signal.getsignal(sig)
        if _is_uvicorns(previous):
            chained = _chain(loop, close, previous)
            signal.signal(sig, chained)
            installed[sig] = (previous, chained)
    try:
        yield
    finally:
        for signum, (handler, ours) in installed.items():
            if signal.getsignal(signum) is ours:
                signal.signal(signum, handler)
