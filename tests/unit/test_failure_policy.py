"""The failure policy's classification (app/db.py): which errors mean "the store cannot be used now"."""

from __future__ import annotations

import asyncpg

from app.db import error_kind, is_unavailable_error


def test_a_connection_asyncpg_no_longer_trusts_is_unavailable_not_a_bug() -> None:
    # What a touch met when the primary was killed under load (tests/test_failover.py): a 500 before.
    error = asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
    assert is_unavailable_error(error)
    assert error_kind(error) == "connection"


def test_a_programming_error_stays_a_bug() -> None:
    assert not is_unavailable_error(ValueError("bad input"))
    assert not is_unavailable_error(asyncpg.exceptions.UndefinedColumnError("column x does not exist"))
