"""Connecting to Ray: join the job's cluster, or start a lean local instance.

A local instance is started without the two helpers a batchrun run never uses: the
autoscaler's monitor (a fixed-size local instance never scales) and the log monitor
(worker logs are not forwarded: log_to_driver=False). Both are Python processes whose
start-up took ~1.2 s of CPU on a 2-core machine, at the very moment the driver plans and
the actors import their libraries. Ray's public `ray.init` has no switch for them, so
`_lean_local_start` hands Ray's own `RayParams` those two settings for the one call; if
this Ray version's parameters do not have them, the instance starts as usual and the
helpers are stopped right after (`_stop_unused_helpers`).
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ray
from loguru import logger

from batchrun.config import JobConfig
from batchrun.errors import EnvironmentProblem
from batchrun.execution import leftovers, ray_join
from batchrun.execution.settings import HEALTH_CHECK, ExecutionSettings
from batchrun.readers.custom import module_location
from batchrun.redact import redact


@dataclass(frozen=True)
class RayReady:
    started: bool
    """True when this process started a local instance (and so shuts it down)."""
    address: str
    seconds: float


def connect_ray(settings: ExecutionSettings, config: JobConfig, job_dir: Path) -> RayReady:
    """Join the cluster `settings` name, or start a local instance of their CPUs; `config`
    and `job_dir` say which custom-step modules a cluster's workers need."""
    address = ray_join.resolve_address(settings.address) if settings.address else None
    if address:
        _probe(address)  # even when this process already has Ray: the job asked for this one
    if ray.is_initialized():
        return RayReady(started=False, address="the Ray instance already running", seconds=0.0)
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "logging_level": logging.ERROR, "configure_logging": True}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home (opt in with 1)
    began = time.monotonic()
    try:
        if address:
            _join(address, config, job_dir, options)
        else:
            with _lean_local_start():
                # "local": a new private instance, never a cluster that `ray start`
                # registered on this machine (nor a dead one's leftover registration)
                ray.init(address="local", num_cpus=settings.local_cpus,
                         _system_config=HEALTH_CHECK, **options)
            _stop_unused_helpers()
            _tidy_local_sessions()
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EnvironmentProblem(redact(f"cannot reach Ray at {address or 'local'}: {exc}")) from None
    session = None if address else _session_dir()
    return RayReady(started=not address, address=address or f"a new local instance ({session})",
                    seconds=time.monotonic() - began)


def _tidy_local_sessions() -> None:
    """Mark the new instance's session folder as this driver's, and remove what killed
    batchrun drivers left of theirs (leftovers.py)."""
    session = _session_dir()
    if session is not None:
        leftovers.mark_session(session)
        leftovers.reap(session.parent)


def _join(address: str, config: JobConfig, job_dir: Path, options: dict[str, Any]) -> None:
    """Join the cluster at `address` (ray_join.py), shipping batchrun's package and the
    job's custom modules so that its nodes need only Ray and batchrun's dependencies."""
    import batchrun

    ray_join.join(address, [str(Path(batchrun.__file__).parent), *_custom_modules(config, job_dir)],
                  options)


_UNUSED_HELPERS = ("monitor", "log_monitor")
"""Processes a local instance starts that a batchrun run never uses (see the module's
docstring). Left running, the monitor also made every ray.shutdown() wait a full second:
it ignores SIGTERM."""
_LEAN_PARAMS = {"no_monitor": True, "include_log_monitor": False}


@contextmanager
def _lean_local_start() -> Iterator[None]:
    """For one `ray.init` call, start the local node without `_UNUSED_HELPERS`."""
    try:
        import ray._private.parameter as parameter

        original = parameter.RayParams
        accepted = inspect.signature(original).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        yield
        return
    if not all(name in accepted for name in _LEAN_PARAMS):
        yield
        return

    def lean_params(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{**kwargs, **_LEAN_PARAMS})

    parameter.RayParams = lean_params  # type: ignore[misc,assignment]
    try:
        with _minimal_agents():
            yield
    finally:
        parameter.RayParams = original  # type: ignore[misc]


@contextmanager
def _minimal_agents() -> Iterator[None]:
    """Ray's node agents started as they are where ray[default] is not installed
    (`--minimal`): with it installed (a cluster's head needs it for `ray job submit`),
    the dashboard agent loads its HTTP, metrics and event modules, ~0.6 s more CPU per
    local start, which a local run never uses. Ray decides this by asking
    `get_dashboard_dependency_error`, so for the one call it hears one."""
    try:
        import ray._private.utils as utils

        original = utils.get_dashboard_dependency_error
    except (ImportError, AttributeError):
        yield
        return
    utils.get_dashboard_dependency_error = lambda: ImportError("batchrun: a local run needs no dashboard")
    try:
        yield
    finally:
        utils.get_dashboard_dependency_error = original


def _stop_unused_helpers() -> None:
    """Stop `_UNUSED_HELPERS` of the local instance we just started (best effort: this
    reaches into Ray's node object, so any surprise leaves them running)."""
    try:
        node: Any = ray._private.worker._global_node
        for kind in _UNUSED_HELPERS:
            for info in node.all_processes.get(kind, []):
                info.process.kill()
                info.process.wait(timeout=2)
    except Exception as exc:  # noqa: BLE001 - an optimisation only
        logger.debug("left Ray's helper processes running: {}", exc)


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a host:port cluster address does not answer
    (also `ray://user:password@host:port?...`: the host and port are the URI's)."""
    host, port = _host_and_port(address)
    if host is None or port is None:
        return  # "auto" and friends: Ray resolves (and reports) those itself
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise EnvironmentProblem(redact(f"cannot reach Ray at {address}: {exc}")) from None


def _host_and_port(address: str) -> tuple[str | None, int | None]:
    try:
        parts = urlsplit(address if "://" in address else f"//{address}")
        return parts.hostname, parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None, None


def _custom_modules(config: JobConfig, job_dir: Path) -> list[str]:
    """Files or packages of custom readers and transforms, shipped to the cluster."""
    references = [config.source.reader, config.transform.function if config.transform else None]
    found = [module_location(r, [str(job_dir)]) for r in references if r]
    return sorted({f for f in found if f})


def shutdown_local() -> None:
    """Stop the local instance this process started and remove its session folder (logs,
    sockets, spilled objects: hundreds of folders after a few hundred runs otherwise), and
    Ray's `session_latest` link when it points there. Best effort: a surprise in Ray's
    internals leaves the folder, never fails the run."""
    session = _session_dir()
    ray.shutdown()
    if session is not None:
        leftovers.remove_session(session)


def _session_dir() -> Path | None:
    try:
        node: Any = ray._private.worker._global_node
        path = Path(node.get_session_dir_path())
    except Exception as exc:  # noqa: BLE001 - Ray internals: leave the folder if they change
        logger.debug("cannot find Ray's session folder: {}", exc)
        return None
    return path if path.name.startswith("session_") else None
