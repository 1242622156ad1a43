"""Writing TOML (the standard library reads it, never writes it): job files for the
benchmarks and values for `--set KEY=VALUE`. Enough of TOML for job files: tables, a
table of tables as `[section.key]` (`[schema.columns]`), inline tables and arrays below."""

from __future__ import annotations

import json
import re
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_value(value: Any) -> str:
    """`value` as a TOML literal: bool, int, float, str, list, dict (an inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def toml_text(doc: dict[str, dict[str, Any]]) -> str:
    """A document of tables: `[section]` with its plain keys, then `[section.key]` for each
    value that is a table of tables (its entries written as inline tables)."""
    lines: list[str] = []
    for section, values in doc.items():
        nested = {k: v for k, v in values.items() if _table_of_tables(v)}
        plain = {k: v for k, v in values.items() if k not in nested}
        if plain or not nested:
            lines += [f"[{section}]", *_pairs(plain), ""]
        for key, table in nested.items():
            lines += [f"[{section}.{toml_key(key)}]", *_pairs(table), ""]
    return "\n".join(lines)


def _pairs(values: dict[str, Any]) -> list[str]:
    return [f"{toml_key(k)} = {toml_value(v)}" for k, v in values.items()]


def _table_of_tables(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())
