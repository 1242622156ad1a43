"""`import batchrun`: the public API, cheap to import, every name in `__all__` real."""

from __future__ import annotations

import subprocess
import sys

import pytest

import batchrun

IMPORTED_AFTER = """
import sys
import batchrun
heavy = ("ray", "pyarrow", "duckdb", "pydantic", "numpy")
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""


def test_importing_batchrun_imports_neither_ray_nor_the_data_libraries() -> None:
    found = subprocess.run([sys.executable, "-c", IMPORTED_AFTER], capture_output=True,
                           text=True, check=True)
    assert found.stdout.strip() == "[]"


@pytest.mark.parametrize("name", batchrun.__all__)
def test_each_public_name_resolves_to_the_object_its_module_defines(name: str) -> None:
    value = getattr(batchrun, name)
    assert value.__module__.startswith("batchrun.")
    assert getattr(sys.modules[value.__module__], name) is value


def test_the_public_api_holds_the_documented_names_and_errors() -> None:
    assert {"start_run", "resume_run", "load_job", "RunStatus", "RunMetrics",
            "BatchrunError", "ConfigError", "SourceError"} <= set(batchrun.__all__)
    for name in batchrun.__all__:
        if name.endswith(("Error", "Problem")):
            assert issubclass(getattr(batchrun, name), batchrun.BatchrunError)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        batchrun.no_such_thing  # noqa: B018


def test_dir_lists_each_public_name_once_even_after_it_was_loaded() -> None:
    batchrun.Catalog  # noqa: B018 - loads the name into the module's globals
    names = dir(batchrun)
    assert len(names) == len(set(names))
    assert set(batchrun.__all__) <= set(names)
