"""`Statement`: one SQL text with named placeholders, compiled once to asyncpg's positional `$n`.

Why named: statements are assembled from shared fragments (the tombstone, event and counter CTEs that
every ending writes). With positional parameters a fragment had to assume its caller's numbering, so
editing one statement could silently break every statement that embedded the same fragment. A fragment
now names what it needs (`:tenant`), or takes the expression as an argument, and `bind()` checks that a
call supplies exactly the statement's placeholders.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

# A string literal, a comment and a `::` cast are copied as they are; `:name` elsewhere is a placeholder.
_TOKEN = re.compile(r"'(?:[^']|'')*'|--[^\n]*|::|:([A-Za-z_][A-Za-z0-9_]*)")


def compile_named(text: str) -> tuple[str, tuple[str, ...]]:
    """`text` with each `:name` replaced by `$n` (one number per distinct name), and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _TOKEN.sub(number, text), tuple(names)


class Statement:
    """A named SQL statement. Every instance is registered, so one test can prepare them all."""

    registry: ClassVar[dict[str, Statement]] = {}
    __slots__ = ("_names", "name", "params", "sql")

    def __init__(self, name: str, text: str) -> None:
        if name in Statement.registry:
            raise ValueError(f"two statements are named {name!r}")
        self.name = name
        self.sql, self.params = compile_named(text)
        self._names = frozenset(self.params)
        Statement.registry[name] = self

    def bind(self, **values: Any) -> tuple[Any, ...]:
        """`(sql, *arguments)` for asyncpg, e.g. `connection.fetchrow(*TOUCH.bind(tenant=t, id=i, ...))`."""
        if values.keys() != self._names:
            missing = sorted(self._names - values.keys())
            extra = sorted(values.keys() - self._names)
            raise TypeError(f"statement {self.name}: missing {missing}, unexpected {extra}")
        return (self.sql, *[values[name] for name in self.params])

    def __repr__(self) -> str:
        return f"Statement({self.name!r})"
