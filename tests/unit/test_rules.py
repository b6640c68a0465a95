"""The pure session rules: ids, If-Match, merge patch, patched fields, cursors, timeouts, binding."""

from __future__ import annotations

import pytest

from app import rules
from app.config import load_settings
from app.errors import MetadataTooLarge, ValidationFailed
from app.schemas import SessionCreate, SessionPatch


def test_minted_ids_are_256_bit_url_safe_and_valid() -> None:
    ids = {rules.mint_session_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 43 and rules.is_valid_session_id(i) for i in ids)
    assert not rules.is_valid_session_id("") and not rules.is_valid_session_id("a b")
    assert not rules.is_valid_session_id("x" * 256) and rules.is_valid_session_id("~!/?#%+=")


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (None, True),
        ("*", True),
        ('"3"', True),
        (' "1", "3" ', True),
        ('W/"3"', False),
        ('"4"', False),
        ("3", False),
    ],
)
def test_if_match_uses_strong_comparison(header: str | None, allowed: bool) -> None:
    assert rules.if_match_allows(header, 3) is allowed


def test_merge_patch_follows_rfc_7396() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert rules.merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert rules.merge_patch(target, {"c": ["x"]}) == {"a": "b", "c": ["x"]}
    assert rules.merge_patch({"a": 1}, ["replaced"]) == ["replaced"]
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}}  # never mutated


def test_patched_changes_only_the_fields_the_patch_names() -> None:
    current = {
        "metadata": {"k": 1},
        "owner": "gw-1",
        "client_id": "c",
        "protocol_version": "p",
        "max_requests": 10,
        "max_requests_per_minute": 5,
        "max_leases": 2,
    }
    assert rules.patched(current, SessionPatch.model_validate({"owner": None})) == {**current, "owner": None}
    # A request limit set to null is removed (0: unlimited), like setting it to 0.
    limits = SessionPatch.model_validate({"max_requests": None, "max_requests_per_minute": 7})
    assert rules.patched(current, limits) == {**current, "max_requests": 0, "max_requests_per_minute": 7}
    assert rules.patched(current, SessionPatch.model_validate({"metadata": None}))["metadata"] == {}
    # max_leases set to null is the default again: one stream lease.
    assert rules.patched(current, SessionPatch.model_validate({"max_leases": None}))["max_leases"] == 1
    merged = rules.patched(current, SessionPatch.model_validate({"metadata": {"j": 2}}))
    assert merged == {**current, "metadata": {"k": 1, "j": 2}}
    assert rules.patched(current, SessionPatch.model_validate({})) == current


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    assert rules.decode_cursor(rules.encode_cursor("a/b+c")) == "a/b+c"
    for bad in ("", "not-base64!", rules.encode_cursor("x y")):
        with pytest.raises(ValidationFailed) as raised:
            rules.decode_cursor(bad)
        assert raised.value.extensions["errors"][0]["field"] == "cursor"


def test_timeouts_default_and_name_each_field_out_of_bounds() -> None:
    settings = load_settings(max_idle_timeout_seconds=100, default_idle_timeout_seconds=50)
    assert rules.timeouts(settings, SessionCreate()) == (50, settings.default_max_lifetime_seconds)
    with pytest.raises(ValidationFailed) as raised:
        rules.timeouts(settings, SessionCreate(idle_timeout_seconds=101, max_lifetime_seconds=0))
    assert [e["field"] for e in raised.value.extensions["errors"]] == [
        "idle_timeout_seconds",
        "max_lifetime_seconds",
    ]


def test_metadata_size_is_measured_as_encoded_json() -> None:
    rules.check_metadata_size({"k": "x" * 10}, 18)  # {"k":"xxxxxxxxxx"}
    with pytest.raises(MetadataTooLarge):
        rules.check_metadata_size({"k": "x" * 11}, 18)


def test_a_session_is_bound_elsewhere_only_when_both_sides_name_different_principals() -> None:
    assert rules.bound_elsewhere("alice", "mallory")
    assert not rules.bound_elsewhere("alice", "alice")
    assert not rules.bound_elsewhere(None, "mallory") and not rules.bound_elsewhere("alice", None)


def test_the_live_gauge_keeps_each_tenants_largest_kinds_and_sums_the_rest() -> None:
    from app.fleet_gauges import bounded_kinds

    rows = [("a", f"k{n:02d}", n) for n in range(1, 26)] + [("b", "mcp", 7)]
    bounded = bounded_kinds(rows, top=3)
    assert [row for row in bounded if row[0] == "a"] == [
        ("a", "k25", 25),
        ("a", "k24", 24),
        ("a", "k23", 23),
        ("a", "other", sum(range(1, 23))),
    ]
    assert ("b", "mcp", 7) in bounded and not any(row[:2] == ("b", "other") for row in bounded)
    assert sum(live for _, _, live in bounded) == sum(live for _, _, live in rows)
