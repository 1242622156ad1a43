"""Joining a Ray cluster the job names: `auto`, `HOST:PORT` (its GCS) or `ray://HOST:PORT`
(Ray Client), with or without Ray's token authentication.

A driver's authentication mode must be the cluster's: a driver with token auth on, joining
a cluster without it, connects, but the cluster's workers cannot call back into it, and
every actor is "cancelled before it started running". A token on disk does not say which
mode the cluster uses (`ray start --head` writes ~/.ray/auth_token on every machine it
ever ran on), so batchrun asks the cluster's GCS once without a token: refused means
token mode, and it asks again with the token. Each question takes milliseconds; Ray
caches its mode, so each switch refreshes Ray's configuration as Ray's CLI does.

A refusal is one line naming the cause (not authorised), an unreachable cluster another
(cannot reach). Ray's own retries are kept short (JOIN_WAIT_S, `_CLIENT_WAITS`) so either
is reported within 10 s. Ray Client's server (`ray://`) is the cluster's driver, not a GCS:
it gets the token whenever there is one, and a refusal there looks like a server that
never answers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from loguru import logger

from batchrun.errors import ConfigError, EnvironmentProblem
from batchrun.redact import redact

JOIN_WAIT_S = 5
"""Seconds Ray's driver keeps retrying a cluster's GCS that does not let it in (Ray's
default is ~20, printing a warning each second): together with the TCP probe, an
unreachable or unauthorised cluster is reported within 10 s."""
_REFUSED = ("InvalidAuthToken", "Unauthenticated", "AuthenticationError")
_AUTH_MODE = "RAY_AUTH_MODE"


def resolve_address(address: str) -> str:
    """The address to join. `auto`: the cluster `ray start` registered on this machine
    (never, as Ray's own `auto` would, whatever GCS process happens to run here, such as
    another run's private instance). A dashboard's http(s):// address (RAY_ADDRESS for
    `ray job` commands) is not one a driver can join: a usage error saying what to use."""
    if address.startswith(("http://", "https://")):
        raise ConfigError("--address", "", f"{redact(address)} is a Ray dashboard (job"
                          " submission) address: submit with `ray job submit --address URL --"
                          " batchrun run ...`, or join the cluster at HOST:6379 (its GCS) or"
                          " ray://HOST:10001 (Ray Client)")
    if address != "auto":
        return address
    from ray._private.utils import read_ray_address

    found = read_ray_address(None)
    if not found:
        raise EnvironmentProblem("--address auto: no Ray cluster is registered on this machine"
                                 " (`ray start --head` registers one); start one, or give"
                                 " --address HOST:PORT")
    return str(found)


def is_client(address: str) -> bool:
    return address.startswith("ray://")


def join(address: str, modules: list[str], options: dict[str, Any]) -> None:
    """Join the cluster at `address` (resolved: no `auto`), shipping `modules` (py_modules).
    Ray's connection warnings go to the run log, never the terminal."""
    runtime_env = {"py_modules": modules, "excludes": ["__pycache__", "*.pyc"]}
    with _gcs_wait(JOIN_WAIT_S), _client_wait(), _stderr_to_text() as captured:
        with_token, failure = _settle_auth_mode(address)
        if failure is None:
            try:
                ray.init(address=address, runtime_env=runtime_env, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                failure = exc
    if captured.text.strip():
        logger.debug("Ray while connecting: {}", redact(captured.text.strip()[-4000:]))
    if failure is not None:
        raise EnvironmentProblem(_join_problem(address, failure, captured.text, with_token))


def _settle_auth_mode(address: str) -> tuple[bool, BaseException | None]:
    """Put this process in the cluster's authentication mode (see the module's docstring):
    whether it is token, and the cluster's refusal if it still refuses. An explicit
    RAY_AUTH_MODE is kept; Ray Client (whose server is the cluster's driver) gets the
    token whenever there is one."""
    explicit = os.environ.get(_AUTH_MODE)
    if explicit is not None:
        return explicit.lower() == "token", _refusal(address)
    if is_client(address):
        with_token = _token_available()
        _set_auth_mode("token" if with_token else "disabled")
        return with_token, None
    _set_auth_mode("disabled")
    refused = _refusal(address)
    if refused is None or not _token_available():
        return False, refused
    _set_auth_mode("token")
    return True, _refusal(address)


def _set_auth_mode(mode: str) -> None:
    """RAY_AUTH_MODE for this process (and the processes it starts), and Ray's cached
    configuration refreshed to see it, as Ray's CLI does."""
    os.environ[_AUTH_MODE] = mode
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]

        Config.initialize("")
    except (ImportError, AttributeError) as exc:  # a Ray without token authentication
        logger.debug("cannot refresh Ray's configuration: {}", exc)


def _token_available() -> bool:
    """Whether a token is where Ray looks for one (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH,
    ~/.ray/auth_token)."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    return Path(path).expanduser().is_file()


def _refusal(address: str) -> BaseException | None:
    """The cluster's answer to one GCS call in this process's auth mode: its
    authentication error, or None (let in, or another problem `ray.init` reports).
    Ray Client's server is not a GCS: its refusals come from `ray.init`."""
    if is_client(address):
        return None
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    try:
        GcsClient(address=address).internal_kv_get(b"session_name", namespace=b"session",
                                                   timeout=JOIN_WAIT_S)
    except Exception as exc:  # noqa: BLE001 - only a refusal counts here
        if any(word in f"{type(exc).__name__} {exc}" for word in _REFUSED):
            return exc
    return None


def _join_problem(address: str, exc: BaseException, ray_said: str, with_token: bool) -> str:
    said = f"{type(exc).__name__} {exc} {ray_said}"
    if is_client(address) and "connection timeout" in said:
        return redact(f"Ray Client at {address} answers on its port but did not let batchrun"
                      f" in: not authorised (set RAY_AUTH_TOKEN to the cluster's token) or"
                      f" not a Ray Client server (the head's --ray-client-server-port,"
                      f" 10001 by default; it needs ray[client] on the head)")
    if is_client(address) and "Initialization failure from server" in said:
        return redact(f"Ray Client at {address} could not start a server for batchrun on the"
                      f" head (see its logs/ray_client_server*.err); try again, or join with"
                      f" --address HEAD:6379 or submit with `ray job submit`")
    if not any(word in said for word in _REFUSED):
        first = (str(exc).strip().splitlines() or [""])[0]
        return redact(f"cannot reach Ray at {address}: {first}")
    fix = ("set RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on its head node)"
           " or copy the head node's ~/.ray/auth_token to this machine")
    if with_token:
        return redact(f"Ray at {address} is reachable but refused batchrun's authentication"
                      f" token (not authorised): {fix}")
    return redact(f"Ray at {address} is reachable but requires token authentication and"
                  f" batchrun found no token (not authorised): {fix}")


@contextmanager
def _gcs_wait(seconds: int) -> Iterator[None]:
    """Ray's driver-side GCS connection budget (RAY_gcs_server_port_wait_time_s), for the
    one `ray.init`, unless the user set it."""
    with _env_default("RAY_gcs_server_port_wait_time_s", str(seconds)):
        yield


@contextmanager
def _env_default(name: str, value: str) -> Iterator[None]:
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


_CLIENT_WAITS = {"INITIAL_TIMEOUT_SEC": 1, "MAX_TIMEOUT_SEC": 2}
"""Ray Client's connection waits (its defaults, 5 s growing to 30 s over 3 attempts, take
35 s to give up on a server that refuses): 1 + 2 + 2 s, read by Ray when it connects."""


@contextmanager
def _client_wait() -> Iterator[None]:
    try:
        from ray.util.client import worker
    except ImportError:  # Ray Client needs ray[client]; ray.init says so itself
        yield
        return
    saved = {name: getattr(worker, name, None) for name in _CLIENT_WAITS}
    for name, seconds in _CLIENT_WAITS.items():
        setattr(worker, name, min(seconds, saved[name] or seconds))
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(worker, name, value)


class _Captured:
    text = ""


@contextmanager
def _stderr_to_text() -> Iterator[_Captured]:
    """Everything written to file descriptor 2 (Ray's C++ core logs there) while the
    block runs, as text; the terminal sees none of it."""
    import tempfile

    captured = _Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")
