"""Execution settings: what the job's [execution] means for one run, decided in one place."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from batchrun.config import JobConfig, validate_config
from batchrun.errors import ConfigError
from batchrun.execution.prepare import check_config
from batchrun.execution.settings import (
    DEFAULT_MEMORY_SHARE,
    INLINE_MAX_BYTES,
    PoolChoice,
    choose_pool,
    inline_settings,
    resolve_settings,
)
from batchrun.execution.start import RESUME_HONOURS, RESUME_REFUSES, refuse_staging_changes

GIB = 2**30


def config(**execution: Any) -> JobConfig:
    return validate_config({"job": {"name": "j", "table": "t"}, "source": {"paths": ["*.csv"]},
                            "execution": execution}, "test")


def test_parallel_defaults_are_two_batches_in_flight_per_worker_and_the_cores_shared() -> None:
    settings = resolve_settings(config(workers=3), cpus=12, available_memory=8 * GIB)
    assert (settings.sequential, settings.workers, settings.max_in_flight) == (False, 3, 6)
    assert settings.threads_per_worker == 4 and settings.local_cpus == 12
    assert settings.controls().in_flight == 6 and not settings.controls().sequential


def test_sequential_means_one_worker_one_batch_in_order_with_every_core() -> None:
    settings = resolve_settings(config(mode="sequential", workers=4, max_in_flight=10),
                                cpus=8, available_memory=8 * GIB)
    assert settings.sequential and settings.workers == 1 and settings.max_in_flight == 1
    assert settings.threads_per_worker == 8
    controls = settings.controls()
    assert controls.sequential and controls.in_flight == 1


def test_an_explicit_max_in_flight_wins_over_the_default() -> None:
    assert resolve_settings(config(workers=2, max_in_flight=7), cpus=2).max_in_flight == 7


def test_bytes_in_flight_default_to_a_share_of_the_memory_available_at_start() -> None:
    settings = resolve_settings(config(), cpus=2, available_memory=16 * GIB)
    assert settings.max_bytes_in_flight == 16 * GIB // DEFAULT_MEMORY_SHARE == 2 * GIB
    assert settings.controls().max_bytes == 2 * GIB


def test_bytes_in_flight_unlimited_is_no_limit_and_a_size_is_taken_as_given() -> None:
    assert resolve_settings(config(max_bytes_in_flight="unlimited"), cpus=2
                            ).max_bytes_in_flight is None
    assert resolve_settings(config(max_bytes_in_flight="1GB"), cpus=2,
                            available_memory=GIB).max_bytes_in_flight == 10**9


def test_more_workers_than_cores_get_one_thread_each_and_a_local_cpu_each() -> None:
    settings = resolve_settings(config(workers=6), cpus=2, available_memory=GIB)
    assert settings.threads_per_worker == 1 and settings.local_cpus == 6


def test_retries_timeouts_and_source_limits_carry_over_from_the_job() -> None:
    settings = resolve_settings(config(
        max_retries=5, retry_budget=9, drain_timeout="2s", batch_timeout="1m",
        per_source_concurrency="unlimited", stagger="200ms", rate_limit="3/s",
        circuit_breaker={"failures": 4, "cooldown": "10s"}, address="host:6379"),
        cpus=2, available_memory=GIB)
    assert (settings.max_retries, settings.retry_budget) == (5, 9)
    assert (settings.drain_timeout, settings.batch_timeout) == (2.0, 60.0)
    controls = settings.controls()
    assert controls.per_source is None and controls.stagger == pytest.approx(0.2)
    assert controls.rate == 3.0 and (controls.breaker_failures, controls.breaker_cooldown) == (4, 10.0)
    assert settings.address == "host:6379"


def test_settings_cannot_change_once_resolved() -> None:
    settings = resolve_settings(config(), cpus=2, available_memory=GIB)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.workers = 9  # type: ignore[misc]


def test_every_job_section_is_either_refused_or_honoured_by_a_resume() -> None:
    sections = {field.alias or name for name, field in JobConfig.model_fields.items()}
    assert sections == set(RESUME_REFUSES) | set(RESUME_HONOURS)
    assert not set(RESUME_REFUSES) & set(RESUME_HONOURS)


@pytest.mark.parametrize("key", ["batch.max_files", "batch.max_bytes", "source.paths",
                                 "schema_.columns.id.type", "job.name", "transform.function",
                                 "validation.max_failed_files", "staging.dir"])
def test_a_resume_refuses_every_key_that_changes_what_is_staged(key: str) -> None:
    with pytest.raises(ConfigError, match="cannot change on resume"):
        refuse_staging_changes("r1", {key: 1})


def test_a_resume_takes_execution_and_fault_keys() -> None:
    refuse_staging_changes("r1", {"execution.workers": 1, "faults.seed": 3,
                                  "execution.circuit_breaker.failures": 0})


def test_without_an_address_the_run_is_local_and_ray_address_counts_as_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_settings(config()).address is None
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # what `ray job submit` sets
    assert resolve_settings(config()).address == "127.0.0.1:6379"
    assert resolve_settings(config(address="10.0.0.5:6379")).address == "10.0.0.5:6379"


# -- the pool: inline for a small local plan, Ray otherwise ------------------------------------


def pool_for(planned: int | None, *, connected: bool = False, hooked: bool = False,
             **execution: Any) -> PoolChoice:
    settings = resolve_settings(config(**execution), cpus=4, available_memory=8 * GIB)
    return choose_pool(settings, planned, ray_connected=connected, hooked=hooked)


def test_auto_runs_a_small_local_plan_inline_and_a_bigger_one_on_ray() -> None:
    assert pool_for(INLINE_MAX_BYTES).pool == "inline"
    bigger = pool_for(INLINE_MAX_BYTES + 1)
    assert bigger.pool == "ray" and f"{INLINE_MAX_BYTES + 1:,} input bytes" in bigger.reason


@pytest.mark.parametrize(("asked", "why"), [
    ({"execution": {"address": "10.0.0.1:6379"}}, "a cluster address"),
    ({"connected": True}, "this process has Ray already"),
    ({"hooked": True}, "fault injection"),
    ({"execution": {"batch_timeout": "5m"}}, "execution.batch_timeout"),
])
def test_auto_picks_ray_whatever_the_size_for_a_cluster_faults_a_timeout_or_a_ray_at_hand(
        asked: dict[str, Any], why: str) -> None:
    choice = pool_for(10, connected=asked.get("connected", False),
                      hooked=asked.get("hooked", False), **asked.get("execution", {}))
    assert choice == PoolChoice("ray", f"auto: {why}")


def test_an_explicit_pool_wins_over_the_plan_and_inline_is_one_worker_with_every_cpu() -> None:
    assert pool_for(10, pool="ray") == PoolChoice("ray", "execution.pool")
    assert pool_for(10 * INLINE_MAX_BYTES, pool="inline", hooked=True).pool == "inline"
    inline = inline_settings(resolve_settings(config(workers=3), cpus=4))
    assert (inline.workers, inline.threads_per_worker, inline.max_in_flight) == (1, 4, 1)


def test_an_inline_pool_cannot_be_asked_to_join_a_cluster() -> None:
    with pytest.raises(ConfigError, match='"inline" runs the batches in the batchrun process'
                       ) as refused:
        check_config(config(pool="inline", address="ray://user:secret@head:10001"), "job.toml",
                     Path("."))
    assert "secret" not in str(refused.value)


def test_a_run_sizes_its_plan_for_the_pool_by_the_decompressed_bytes_as_a_resume_does() -> None:
    """A small gzip that expands past the inline bound must not run in the driver: `run`
    (start.py) and `resume` (run.py, from the batches' bytes) must see the same size."""
    from concurrent.futures import Future

    from batchrun.execution.start import _planned_bytes
    from batchrun.manifest import Selection
    from batchrun.model import PlannedFile

    gz = PlannedFile("a.csv.gz", size=2**20, mtime=0.0, source="s", expanded=INLINE_MAX_BYTES * 4)
    selecting: Future[Selection] = Future()
    selecting.set_result(Selection(planned=[gz, PlannedFile("b.csv", 10, 0.0, "s")]))
    assert _planned_bytes(selecting) == INLINE_MAX_BYTES * 4 + 10
