"""The parts of object storage that need no S3 server: glob rules over keys, settings,
how the boto3 client is made, error mapping."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from batchrun import objectstore
from batchrun.config import load_job, validate_config
from batchrun.errors import ConfigError, EnvironmentProblem
from batchrun.identity import difference
from batchrun.model import Fingerprint
from batchrun.plan import expand_sources
from batchrun.walk import object_pattern
from tests.conftest import write_job


@pytest.mark.parametrize(("pattern", "uri", "matches"), [
    ("s3://b/in/*/*.csv", "s3://b/in/s1/a.csv", True),
    ("s3://b/in/*/*.csv", "s3://b/in/s1/deeper/a.csv", False),
    ("s3://b/in/**/*.csv", "s3://b/in/a.csv", True),
    ("s3://b/in/**/*.csv", "s3://b/in/x/y/a.csv", True),
    ("s3://b/in/**/*.csv", "s3://b/in/.hidden/a.csv", False),
    ("s3://b/in/*.csv", "s3://b/in/.a.csv", False),
    ("s3://b/in/.*.csv", "s3://b/in/.a.csv", True),
    ("s3://b/in/f[0-9].csv", "s3://b/in/f3.csv", True),
    ("s3://b/in/f[!0-9].csv", "s3://b/in/f3.csv", False),
    ("s3://b/in/f?.csv", "s3://b/in/f/.csv", False),
    ("s3://b/in/exact.csv", "s3://b/in/exact.csv", True),
    ("s3://b/in/exact.csv", "s3://b/in/exact.csv.gz", False),
    ("s3://b/in/*/*.csv", "s3://b/in//a.csv", False),
    ("s3://b/in/**", "s3://b/in/x//a.csv", False),
    ("s3://b/in/.*/*.csv", "s3://b/in/../a.csv", False),
    ("s3://b/in/.*/*.csv", "s3://b/in/.x/a.csv", True),
])
def test_object_globs_follow_the_rules_of_local_globs(pattern: str, uri: str, matches: bool) -> None:
    prefix, matcher = object_pattern(pattern)
    assert uri.startswith(prefix)
    assert bool(matcher.match(uri)) is matches


def test_an_object_glob_lists_only_below_its_literal_prefix() -> None:
    assert object_pattern("s3://b/in/2024-*/x/*.csv")[0] == "s3://b/in/"
    assert object_pattern("s3://b/*.csv")[0] == "s3://b/"


def test_the_storage_table_beats_the_endpoint_variables_which_beat_aws(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert objectstore.resolve(objectstore.Settings()).endpoint == "https://s3.us-east-1.amazonaws.com"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3only:2")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    resolved = objectstore.resolve(objectstore.Settings())
    assert (resolved.endpoint, resolved.region, resolved.secure) == ("http://s3only:2", "eu-west-3", False)
    chosen = objectstore.resolve(objectstore.Settings(endpoint="https://mine:3", region="x-1"))
    assert (chosen.endpoint, chosen.region, chosen.secure) == ("https://mine:3", "x-1", True)


def test_secrets_come_from_the_named_variables_and_never_show_in_a_repr(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "AKIDNAMED")
    monkeypatch.setenv("MY_SECRET", "very-secret-value")
    resolved = objectstore.resolve(objectstore.Settings(access_key_env="MY_KEY",
                                                        secret_key_env="MY_SECRET"))
    assert (resolved.access_key, resolved.secret_key) == ("AKIDNAMED", "very-secret-value")
    assert "very-secret-value" not in repr(resolved)


def storage(**keys: object) -> dict[str, object]:
    return {"job": {"name": "j", "table": "t"}, "source": {"paths": ["s3://b/*.csv"]},
            "storage": keys}


@pytest.mark.parametrize(("endpoint", "expected"), [
    ("http://user:pw@host:9000", "credentials do not belong in the endpoint"),
    ("ftp://host", "expected http(s)://host[:port]"),
    ("http://host/path", "expected http(s)://host[:port]"),
    ("http://host:99999", "expected http(s)://host[:port]"),
    ("http://host:port", "expected http(s)://host[:port]"),
    ("http://:9000", "expected http(s)://host[:port]"),
])
def test_a_bad_endpoint_is_a_config_error_naming_the_key(endpoint: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_config(storage(endpoint=endpoint), "job.toml")
    assert raised.value.key == "storage.endpoint" and expected in str(raised.value)
    assert "pw" not in str(raised.value) or "credentials" in str(raised.value)


@pytest.mark.parametrize(("key", "path", "expected"), [
    ("staging.dir", "s3://", "(no bucket)"),
    ("staging.dir", "s3:///prefix", "(no bucket)"),
    ("staging.dir", "s3:/lake/staging", "expected s3://bucket/... (lower case, two slashes)"),
    ("staging.dir", "S3://lake/staging", "expected s3://bucket/... (lower case, two slashes)"),
    ("source.paths", "S3://landing/*.csv", "expected s3://bucket/... (lower case, two slashes)"),
    ("source.paths", "s3:landing/*.csv", "expected s3://bucket/... (lower case, two slashes)"),
    ("source.paths", "s3://", "(no bucket)"),
    ("source.paths", "s3://land*/x.csv", "a bucket name without wildcards"),
    ("staging.dir", "s3://lake//staging", "without empty, '.' or '..' folder names"),
    ("staging.dir", "s3://lake/a/../staging/", "without empty, '.' or '..' folder names"),
    ("source.paths", "s3://landing/in//*.csv", "without empty, '.' or '..' folder names"),
])
def test_a_malformed_object_uri_is_a_config_error_naming_the_key(key: str, path: str,
                                                                 expected: str) -> None:
    """Before, `s3:/x` and `S3://x` were local folders named "s3:"/"S3:", and an `s3://`
    staging dir with no bucket skipped every source object as "in the staging dir"."""
    raw = storage()
    if key == "staging.dir":
        raw["staging"] = {"dir": path}
    else:
        raw["source"] = {"paths": ["s3://b/ok/*.csv", path]}
    with pytest.raises(ConfigError) as raised:
        validate_config(raw, "job.toml")
    assert raised.value.key == key and expected in str(raised.value)


def test_the_storage_table_refuses_a_secret_key() -> None:
    with pytest.raises(ConfigError) as raised:
        validate_config(storage(secret_key="x"), "job.toml")
    assert raised.value.key == "storage.secret_key" and "unknown key" in str(raised.value)


def test_throttling_and_server_errors_are_transient_but_403_and_404_are_final() -> None:
    assert isinstance(objectstore._error("s3://b/k", 503, "SlowDown", "x"),
                      objectstore.TransientObjectStoreError)
    assert isinstance(objectstore._error("s3://b/k", None, "ConnectionRefusedError", "x"),
                      objectstore.TransientObjectStoreError)
    for status, code in ((403, "AccessDenied"), (404, "NoSuchBucket"), (412, "PreconditionFailed")):
        error = objectstore._error("s3://b/k", status, code, "x")
        assert not isinstance(error, objectstore.TransientObjectStoreError)


def test_a_changed_etag_is_named_as_such() -> None:
    planned = Fingerprint(size=5, sha256="etag:aaa")
    assert difference(planned, Fingerprint(size=5, sha256="etag:bbb")) == "content changed (ETag)"
    assert difference(planned, Fingerprint(size=6, sha256="etag:aaa")) == "size 5 → 6 bytes"


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDUNIT", "AWS_SECRET_ACCESS_KEY": "unit-secret-never-shown"}


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def test_the_boto3_client_is_path_style_with_the_storage_timeouts_and_standard_retries(
        credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "a-profile-nowhere")  # ignored, not an error
    api = objectstore.S3Client(objectstore.resolve(objectstore.Settings(
        endpoint="http://127.0.0.1:9", region="eu-west-3", max_attempts=3, timeout=2.5))).api
    config = api.meta.config
    assert (api.meta.endpoint_url, api.meta.region_name) == ("http://127.0.0.1:9", "eu-west-3")
    assert config.s3 == {"addressing_style": "path"}
    assert (config.connect_timeout, config.read_timeout) == (2.5, 2.5)
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert api._request_signer._credentials.access_key == "AKIDUNIT"  # given, not looked up


def test_without_credentials_no_client_is_made_and_the_line_names_the_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_SECRET", raising=False)
    monkeypatch.setenv("MY_KEY", "AKIDNAMED")
    settings = objectstore.Settings(endpoint="http://127.0.0.1:9", access_key_env="MY_KEY",
                                    secret_key_env="MY_SECRET")
    for make in (objectstore.client, objectstore.filesystem):
        with pytest.raises(objectstore.ObjectStoreError) as raised:
            make(settings)
        assert str(raised.value) == "http://127.0.0.1:9: no credentials: set MY_KEY and MY_SECRET"
        assert not isinstance(raised.value, objectstore.TransientObjectStoreError)


def test_without_boto3_an_s3_client_fails_in_one_line_naming_the_extra(
        credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if not installed
    with pytest.raises(EnvironmentProblem) as raised:
        objectstore.client(objectstore.Settings(endpoint="http://127.0.0.1:7"))
    assert str(raised.value) == "s3:// needs boto3: pip install 'batchrun[s3]'"


def test_an_endpoint_that_refuses_connections_is_transient_and_named_in_one_line(
        credentials: None) -> None:
    client = objectstore.S3Client(objectstore.resolve(objectstore.Settings(
        endpoint="http://127.0.0.1:9", max_attempts=2, timeout=2)))
    with pytest.raises(objectstore.TransientObjectStoreError) as raised:
        list(client.list("bucket", "in/"))
    line = str(raised.value)
    assert line.startswith("s3://bucket/in/: ConnectionRefusedError: ") and "Connection refused" in line
    assert line.endswith("(endpoint http://127.0.0.1:9)") and "\n" not in line
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in line


@pytest.mark.parametrize(("status", "code", "retried"), [
    (503, "SlowDown", True), (500, "InternalError", True), (403, "SignatureDoesNotMatch", False),
    (403, "AccessDenied", False), (404, "NoSuchBucket", False), (404, "NoSuchKey", False),
    (412, "PreconditionFailed", False),
])
def test_botocores_standard_retries_take_throttling_and_5xx_but_never_403_404_412(
        status: int, code: str, retried: bool) -> None:
    import botocore.session
    from botocore.retries.standard import RetryContext, StandardRetryConditions

    put = botocore.session.get_session().get_service_model("s3").operation_model("PutObject")
    context = RetryContext(attempt_number=1, operation_model=put,
                           parsed_response={"Error": {"Code": code}},
                           http_response=type("Answer", (), {"status_code": status})())
    assert StandardRetryConditions(max_attempts=5).is_retryable(context) is retried


def test_a_head_answer_without_a_body_is_named_by_its_status() -> None:
    assert objectstore._code({"Error": {"Code": "404"}}, 404) == "NotFound"
    assert objectstore._code({"Error": {"Code": "NoSuchBucket"}}, 404) == "NoSuchBucket"
    error = objectstore._error("s3://b/k", 403, objectstore._code({"Error": {"Code": "403"}}, 403),
                               "endpoint http://x:1")
    assert str(error) == "s3://b/k: HTTP 403 Forbidden (HTTP 403 Forbidden from endpoint http://x:1)"


def test_staging_to_s3_without_credentials_fails_while_planning_even_from_local_sources(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "in" / "s1").mkdir(parents=True)
    (tmp_path / "in" / "s1" / "a.csv").write_text("order_id\n1\n")
    job = write_job(tmp_path, tmp_path / "in",
                    extra='[storage]\nendpoint = "http://127.0.0.1:9"\n')
    job.write_text(job.read_text().replace('dir = "staging"', 'dir = "s3://lake/staging"'))
    with pytest.raises(objectstore.ObjectStoreError, match="no credentials: set AWS_ACCESS_KEY_ID"):
        expand_sources(load_job(job))
