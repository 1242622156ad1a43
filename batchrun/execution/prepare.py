"""Run start's checks of a job: what loading the job file (pure) does not look at.

Loading validates the TOML; these need the world, so they run when a run starts
(`start_run`, `resume_run`, and `batchrun run` before it opens anything):

- the custom reader and transform import (a typo fails before anything starts);
- each column pattern compiles in DuckDB, which runs it (RE2: no backreferences or
  lookaround);
- fault injection (`[faults]` and the `BATCHRUN_FAULTS` environment variable) parses;
- `execution.pool = "inline"` is not asked to join a cluster (`execution.address`).

Each failure is the `ConfigError` loading used to raise: file, key, what was expected
(exit 2). The checks are cheap and may run twice: imports are cached.
"""

from __future__ import annotations

from pathlib import Path

from batchrun.config import Job, JobConfig
from batchrun.errors import ConfigError
from batchrun.hooks import run_hooks
from batchrun.readers.custom import resolve
from batchrun.validate import pattern_problem


def check_job(job: Job) -> None:
    """The run-start checks of a loaded job file."""
    check_config(job.config, job.given or str(job.path), job.base_dir)


def check_config(config: JobConfig, where: str, base_dir: Path) -> None:
    """The run-start checks of `config`, whose job file is `where`, in `base_dir`."""
    _check_custom_steps(where, config, base_dir)
    _check_patterns(where, config)
    _check_faults(where, config)
    _check_pool(where, config)


def _check_custom_steps(where: str, config: JobConfig, base_dir: Path) -> None:
    """Import custom readers and transforms now, so a typo fails before anything starts."""
    steps = [("source.reader", config.source.reader),
             ("transform.function", config.transform.function if config.transform else None)]
    for key, reference in steps:
        if reference:
            try:
                resolve(reference, [str(base_dir)])
            except Exception as exc:  # noqa: BLE001 - any import failure is a config error
                raise ConfigError(where, key, f"cannot import {reference} ({exc})") from None


def _check_patterns(where: str, config: JobConfig) -> None:
    """Patterns run in DuckDB (RE2, no backreferences or lookaround): check them there."""
    for name, spec in (config.schema_.columns if config.schema_ else {}).items():
        problem = spec.pattern and pattern_problem(spec.pattern)
        if problem:
            raise ConfigError(where, f"schema.columns.{name}.pattern",
                              f"not a regular expression RE2 accepts ({problem})")


def _check_faults(where: str, config: JobConfig) -> None:
    try:
        run_hooks(config.faults)
    except ConfigError as exc:
        raise ConfigError(where, "faults", exc.expected) from None


def _check_pool(where: str, config: JobConfig) -> None:
    """An inline run is this process: it cannot join the cluster an address names (the
    address is not repeated: it may hold credentials)."""
    if config.execution.pool == "inline" and config.execution.address:
        raise ConfigError(where, "execution.pool", '"inline" runs the batches in the batchrun'
                          ' process, so it cannot join the cluster execution.address names'
                          ' (use "ray" or "auto")')
