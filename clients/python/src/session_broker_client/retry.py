"""Bounded, jittered retries for the calls that are safe to repeat.

Which calls are retried (and why):
- `get`, `list` pages, `stats`: reads; repeating one changes nothing.
- `touch`: idempotent in effect. The broker's touch is monotonic and throttled on its own clock, so a
  repeated touch at most moves the expiry a little further, exactly as the next request would.
- `delete`: retried, and a retry that finds the session gone is reported as success by `delete()`
  only when the first attempt's outcome was unknown (a transport error); a plain 404 on the first
  attempt is still `SessionNotFound`.
- `revoke`: idempotent by the broker's contract (a retry revokes 0 more).
- `patch` with `if_match`: a repeat after an unknown outcome either applies once or fails with 412;
  without `if_match` a merge patch is still idempotent (same document, same result), so it is retried.
- `report_requests`: not retried inline. The reporter keeps a failed batch and sends it with the next
  one, so a lost answer can count a batch twice at worst; analytics tolerate that, sessions never see it.
- `create` and `rotate`: never retried blindly. A create whose answer was lost may have created a
  session (and used a quota slot); repeating it would create a second one. `create(idempotency_key=...)`
  sends an `Idempotency-Key` header and only then is retried. `register` (PUT of a known id) is retried:
  a repeat after a lost answer gets 409 `session-exists`, which `register` reports faithfully.

Only transport errors (connect, read/write timeouts, dropped connections) and 503 are retried; every
other status is the broker's answer and is returned at once. `Retry-After` is honoured: the retry waits
at least that long, and when the broker asks for more than `max_delay` the call gives up at once and
raises `BrokerUnavailable` carrying the broker's `retry_after` (a gateway request is never held longer
than the policy allows, and the broker is never asked again sooner than it said).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from session_broker_client.errors import BrokerUnavailable

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` counts the first try: 3 means at most 2 retries.

    Delays use "full jitter" (a uniform draw below an exponentially growing cap) so that a fleet of
    gateways that saw the same outage does not retry in lockstep; a `Retry-After` from the broker sets
    the floor of the delay instead, still capped by `max_delay`."""

    attempts: int = 3
    base_delay: float = 0.05
    max_delay: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def delay(self, retry_number: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry `retry_number` (1 for the first retry); None: do not retry,
        because the broker asked for a longer pause than this policy may wait."""
        if retry_after is not None and retry_after > self.max_delay:
            return None
        cap = min(self.max_delay, self.base_delay * (2 ** (retry_number - 1)))
        jittered = random.uniform(0, cap)
        return jittered if retry_after is None else max(retry_after, jittered)


NO_RETRY = RetryPolicy(attempts=1)


async def with_retries(policy: RetryPolicy, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt` until it succeeds, raises something other than BrokerUnavailable, or the policy
    is exhausted (then the last BrokerUnavailable propagates)."""
    for number in range(1, policy.attempts + 1):
        try:
            return await attempt()
        except BrokerUnavailable as error:
            pause = None if number == policy.attempts else policy.delay(number, error.retry_after)
            if pause is None:
                raise
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")  # the loop returns or raises
