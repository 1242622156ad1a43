"""The pure parts of object storage: glob rules over keys, settings, SigV4 signing."""

from __future__ import annotations

import pytest

from batchrun import objectstore
from batchrun.config import validate_config
from batchrun.errors import ConfigError
from batchrun.identity import difference
from batchrun.model import Fingerprint
from batchrun.walk import object_pattern


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
])
def test_a_bad_endpoint_is_a_config_error_naming_the_key(endpoint: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_config(storage(endpoint=endpoint), "job.toml")
    assert raised.value.key == "storage.endpoint" and expected in str(raised.value)
    assert "pw" not in str(raised.value) or "credentials" in str(raised.value)


def test_the_storage_table_refuses_a_secret_key() -> None:
    with pytest.raises(ConfigError) as raised:
        validate_config(storage(secret_key="x"), "job.toml")
    assert raised.value.key == "storage.secret_key" and "unknown key" in str(raised.value)


def test_requests_are_signed_as_the_aws_signature_v4_example_says() -> None:
    """AWS's documented example (GET /test.txt with a Range header, 2013-05-24)."""
    client = objectstore.S3Client(objectstore.Resolved(
        endpoint="https://examplebucket.s3.amazonaws.com", region="us-east-1",
        access_key="AKIAIOSFODNN7EXAMPLE", secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"))
    signed = client._signed("GET", "/test.txt", "", b"", {"range": "bytes=0-9"},
                            now="20130524T000000Z")
    assert signed["authorization"].endswith(
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        " Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


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
