"""Named placeholders compile to asyncpg's positional ones; literals, comments and casts are left alone."""

from __future__ import annotations

import pytest

from app.sql.statement import Statement, compile_named


def test_each_distinct_name_gets_one_number_in_order_of_first_use() -> None:
    sql, names = compile_named("SELECT :b, :a, :b::text")
    assert sql == "SELECT $1, $2, $1::text"
    assert names == ("b", "a")


def test_casts_string_literals_and_comments_are_not_placeholders() -> None:
    text = "SELECT 'x:y' , ':quoted''s:z', now()::date -- a comment with :not_a_param\nFROM t WHERE c = :real"
    sql, names = compile_named(text)
    assert names == ("real",)
    assert sql.endswith("WHERE c = $1")
    assert "'x:y'" in sql and "':quoted''s:z'" in sql and "now()::date" in sql and ":not_a_param" in sql


def test_bind_demands_exactly_the_statement_parameters() -> None:
    statement = Statement("unit_test_bind", "SELECT :tenant, :id")
    assert statement.bind(id="i", tenant="t") == ("SELECT $1, $2", "t", "i")
    with pytest.raises(TypeError, match=r"missing \['id'\]"):
        statement.bind(tenant="t")
    with pytest.raises(TypeError, match=r"unexpected \['extra'\]"):
        statement.bind(tenant="t", id="i", extra=1)
    with pytest.raises(ValueError, match="two statements"):
        Statement("unit_test_bind", "SELECT 1")
    del Statement.registry["unit_test_bind"]
