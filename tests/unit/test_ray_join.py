"""What joining a cluster says when it cannot: one line naming the cause and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.errors import ConfigError
from batchrun.execution.ray_join import _join_problem, _token_available, resolve_address


def test_a_dashboard_url_is_refused_with_what_to_use_instead() -> None:
    with pytest.raises(ConfigError) as refused:
        resolve_address("http://user:secret@head:8265")
    message = str(refused.value)
    assert "ray job submit" in message and "ray://HOST:10001" in message
    assert "secret" not in message


def test_host_port_and_ray_client_addresses_are_joined_as_given() -> None:
    assert resolve_address("10.0.0.5:6379") == "10.0.0.5:6379"
    assert resolve_address("ray://head:10001") == "ray://head:10001"


@pytest.mark.parametrize(("with_token", "expected"), [
    (True, "refused batchrun's authentication token (not authorised)"),
    (False, "requires token authentication and batchrun found no token (not authorised)")])
def test_a_refusal_says_not_authorised_and_how_to_give_the_token(with_token: bool,
                                                                 expected: str) -> None:
    line = _join_problem("10.0.0.5:6379", RuntimeError("x"), "RPC error: InvalidAuthToken: ...",
                         with_token)
    assert expected in line and "RAY_AUTH_TOKEN" in line and "\n" not in line


def test_an_unreachable_cluster_is_one_line_without_the_auth_advice() -> None:
    line = _join_problem("10.0.0.5:6379", ConnectionError("timed out\nmore detail"), "", False)
    assert line == "cannot reach Ray at 10.0.0.5:6379: timed out"


def test_a_ray_client_server_that_never_lets_batchrun_in_names_both_causes() -> None:
    line = _join_problem("ray://head:10001", ConnectionError("ray client connection timeout"),
                         "", True)
    assert "not authorised" in line and "Ray Client server" in line


def test_a_token_is_found_where_ray_looks_for_one(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not _token_available()
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t" * 64)
    assert _token_available()
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere"))
    assert not _token_available()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t" * 64)
    assert _token_available()


def test_a_ray_client_server_that_fails_to_start_says_what_to_use_instead() -> None:
    line = _join_problem("ray://head:10001", ConnectionError(
        "Initialization failure from server:\nTraceback ..."), "", False)
    assert "--address HEAD:6379" in line and "ray job submit" in line and "\n" not in line
