"""Custom steps named in the job file as "package.module:function".

`[source] reader` turns a path into an Arrow table (formats batchrun does not ship);
`[transform] function` turns a table of good rows into another table before staging.
Both are imported inside the worker; the job file's folder is on the import path, and
for a cluster run their module is shipped with the job (Ray `py_modules`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REFERENCE = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


def with_search_path(directories: Iterable[str]) -> None:
    for directory in directories:
        if directory not in sys.path:
            sys.path.insert(0, directory)


def resolve(reference: str, search_dirs: Iterable[str] = ()) -> Callable[..., Any]:
    """Import "module:function"; raises ImportError or AttributeError with the reason."""
    with_search_path(search_dirs)
    module_name, function_name = reference.split(":", 1)
    function = getattr(importlib.import_module(module_name), function_name)
    if not callable(function):
        raise TypeError(f"{reference} is not callable")
    return function


def module_location(reference: str, search_dirs: Iterable[str] = ()) -> str | None:
    """The file or package folder to ship to a cluster for this reference."""
    with_search_path(search_dirs)
    top = reference.split(":", 1)[0].split(".", 1)[0]
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin)
    return str(origin.parent if origin.name == "__init__.py" else origin)


def last_line(exc: BaseException) -> str:
    """The last line of a traceback: 'ValueError: bad thing'."""
    return traceback.format_exception_only(type(exc), exc)[-1].strip()
