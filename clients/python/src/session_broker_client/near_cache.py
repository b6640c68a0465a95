"""A near-cache for touch: answer a touch locally when the same session (and principal) was touched
successfully a moment ago.

Why it is safe, and what bounds it (docs/gateway-kit.md has the longer story):
- An entry answers for at most `window` seconds after the real touch that made it, and never past
  that touch's `expires_at` (less a margin for clock skew between this host and the broker's database).
- The broker tells every subscriber when a session ends (`session.ended`, whatever the reason:
  deleted, revoked, evicted, expired...) or moves (`session.rotated`): the entry is dropped as soon as
  the event arrives, which is the broker's poll interval (0.5 s) plus delivery.
- The cache answers only while the event stream is up. When it drops (or the broker reports a gap or a
  store error) the cache empties and every touch goes to the broker until the stream is back: a cache
  that cannot hear about ends must not vouch for sessions.
- A touch that was in flight when its session ended cannot re-insert it: an entry is stored only if
  no end of that session (and no clear) happened since the touch began.
- Entries are keyed by (session id, principal), so one principal's hit never answers for another.

What it costs: a local hit does not reach the broker, so `last_seen_at` lags by at most `window`. The
broker throttles touches by its own granularity anyway (min(60 s, idle timeout / 10) by default), so
a window below that granularity changes no expiry the broker would have written.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from session_broker_client.events import DISCONNECTED
from session_broker_client.models import Event, Touched

# Local clocks and the broker's database clock may disagree a little; never lean on the last second.
EXPIRY_MARGIN_SECONDS = 1.0
ENDING_EVENTS = ("session.ended", "session.rotated")
DISTRUST_EVENTS = ("stream.gap", "stream.error", DISCONNECTED)


@dataclass
class NearCacheStats:
    hits: int = 0
    misses: int = 0
    invalidations: int = 0
    stores: int = 0


class NearCache:
    """The cache proper; `SessionBroker.touch` consults it. `connected` must be true (the event stream
    is up) for anything to be answered locally."""

    def __init__(
        self,
        window: float,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if window <= 0:
            raise ValueError("the near-cache window must be positive")
        self.window = window
        self.max_entries = max_entries
        self.stats = NearCacheStats()
        self._clock = clock
        self._wall_clock = wall_clock
        # session id -> principal -> (valid until, the touch that made it); ordered for eviction.
        self._entries: OrderedDict[str, dict[str | None, tuple[float, Touched]]] = OrderedDict()
        # When each session last ended (monotonic), kept one window long to refuse late inserts.
        self._ended: dict[str, float] = {}
        self._cleared_at = float("-inf")
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def begin(self) -> float:
        """Call before a real touch; pass the result to `store`."""
        return self._clock()

    def lookup(self, session_id: str, principal: str | None) -> Touched | None:
        """The local answer, or None (a miss: ask the broker)."""
        if not self._connected:
            self.stats.misses += 1
            return None
        by_principal = self._entries.get(session_id)
        entry = by_principal.get(principal) if by_principal is not None else None
        if entry is None:
            self.stats.misses += 1
            return None
        valid_until, touched = entry
        if self._clock() >= valid_until:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return Touched(id=touched.id, expires_at=touched.expires_at, local=True)

    def store(self, session_id: str, principal: str | None, touched: Touched, began: float) -> None:
        """Remember a successful real touch that started at `began` (from `begin`)."""
        if (
            not self._connected
            or began <= self._cleared_at
            or self._ended.get(session_id, float("-inf")) >= began
        ):
            return
        now = self._clock()
        remaining = self._seconds_until(touched.expires_at) - EXPIRY_MARGIN_SECONDS
        valid_until = now + min(self.window, remaining)
        if valid_until <= now:
            return
        self._entries.setdefault(session_id, {})[principal] = (valid_until, touched)
        self._entries.move_to_end(session_id)
        self.stats.stores += 1
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def on_event(self, event: Event) -> None:
        """Subscriber of the broker's event stream."""
        if event.type in ENDING_EVENTS:
            # A rotation's event is about the new id; the id that stopped working is `old_id`.
            ended = event.data.get("old_id") if event.type == "session.rotated" else event.session_id
            if isinstance(ended, str):
                self.invalidate(ended)
        elif event.type == "stream.open":
            self._connected = True
        elif event.type in DISTRUST_EVENTS:
            self._connected = False
            self.clear()
        if event.type == "stream.gap":
            # Events were lost: nothing cached before now can be trusted, but the stream is up again.
            self._connected = True

    def invalidate(self, session_id: str) -> None:
        now = self._clock()
        self._ended[session_id] = now
        dropped = self._entries.pop(session_id, None)
        if dropped:
            self.stats.invalidations += len(dropped)
        self._forget_old_ends(now)

    def clear(self) -> None:
        self.stats.invalidations += sum(len(by_principal) for by_principal in self._entries.values())
        self._entries.clear()
        self._cleared_at = self._clock()

    def __len__(self) -> int:
        return sum(len(by_principal) for by_principal in self._entries.values())

    def _forget_old_ends(self, now: float) -> None:
        if len(self._ended) > 1024:
            horizon = now - self.window
            self._ended = {sid: at for sid, at in self._ended.items() if at >= horizon}

    def _seconds_until(self, moment: datetime) -> float:
        return moment.timestamp() - self._wall_clock()
