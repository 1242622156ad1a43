"""Object storage: `s3://bucket/key` sources and staging.

Two clients, each made lazily in the process that uses it (a Ray actor makes its own; a
client is never pickled from the driver, and the AWS SDK inside pyarrow is not fork-safe):

- pyarrow's `S3FileSystem` reads objects: source files (streamed, decompressed) and the
  staged Parquet that `batchrun query` hands to DuckDB. It is given the endpoint, region
  and credentials explicitly: a bare `S3FileSystem()` ignores `AWS_ENDPOINT_URL(_S3)`.
- `S3Client`, over a boto3 client (the `s3` extra), does what pyarrow does not expose:
  listings with ETags, HEAD, the put-if-absent write (`If-None-Match: *`) that commits a
  staged object, and DELETE.

Settings come from the job's `[storage]` table (endpoint, region, the names of the
credential variables; no secrets) and else from the usual AWS variables. Secrets are read
from the environment of the process that needs them and never leave it: not in a
setting, an error, a log line or the catalog. Both clients get them explicitly, so
neither looks for others (profiles, the instance metadata service): a process without
them fails in one line. Throttling (503 SlowDown), 5xx answers and connection failures
are retried with backoff; 403, 404 and 412 are final.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from batchrun.errors import EnvironmentProblem, Transient

SCHEME = "s3://"
DEFAULT_REGION = "us-east-1"


def is_object(path: object) -> bool:
    """Whether `path` names an object (`s3://...`) rather than a local file."""
    return isinstance(path, str) and path.startswith(SCHEME)


@dataclass(frozen=True)
class Location:
    bucket: str
    key: str

    @classmethod
    def of(cls, uri: str) -> Location:
        bucket, _, key = uri.removeprefix(SCHEME).partition("/")
        return cls(bucket, key)

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def arrow_path(self) -> str:
        """How pyarrow's S3FileSystem names it."""
        return f"{self.bucket}/{self.key}"


def join(location: str, name: str) -> str:
    """`location/name` for a folder or a prefix alike (a `Path` would fold `s3://`)."""
    return f"{str(location).rstrip('/')}/{name}"


@dataclass(frozen=True)
class Settings:
    """What the `[storage]` table says; None: the AWS variables decide. No secrets here:
    only the names of the variables that hold them."""

    endpoint: str | None = None
    region: str | None = None
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"
    max_attempts: int = 5
    timeout: float = 10.0

    @classmethod
    def of(cls, section: dict[str, Any] | None) -> Settings:
        return cls(**section) if section else cls()


@dataclass(frozen=True)
class Resolved:
    """Settings with the environment of this process applied (secrets kept out of repr)."""

    endpoint: str
    region: str
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    max_attempts: int = 5
    timeout: float = 10.0

    @property
    def secure(self) -> bool:
        return urlsplit(self.endpoint).scheme == "https"

    @property
    def netloc(self) -> str:
        return urlsplit(self.endpoint).netloc


def resolve(settings: Settings) -> Resolved:
    region = (settings.region or os.environ.get("AWS_DEFAULT_REGION")
              or os.environ.get("AWS_REGION") or DEFAULT_REGION)
    endpoint = (settings.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or f"https://s3.{region}.amazonaws.com")
    if "://" not in endpoint:
        endpoint = f"https://{endpoint}"
    return Resolved(endpoint=endpoint.rstrip("/"), region=region,
                    access_key=os.environ.get(settings.access_key_env) or None,
                    secret_key=os.environ.get(settings.secret_key_env) or None,
                    session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
                    max_attempts=settings.max_attempts, timeout=settings.timeout)


# -- errors ----------------------------------------------------------------------------------


class ObjectStoreError(EnvironmentProblem):
    """A request to the object store failed for good (403, 404, a bad endpoint)."""

    def __init__(self, uri: str, status: int | None, code: str, reason: str) -> None:
        super().__init__(uri, status, code, reason)
        self.uri, self.status, self.code, self.reason = uri, status, code, reason

    def __str__(self) -> str:
        return f"{self.uri}: {self.reason}"

    @property
    def missing(self) -> bool:
        return self.status == 404


class TransientObjectStoreError(ObjectStoreError, Transient):
    """Throttled (503 SlowDown), a 5xx, or the endpoint did not answer: retrying may help."""


_HINTS = {
    "NoSuchBucket": "bucket does not exist",
    "NoSuchKey": "object not found",
    "SignatureDoesNotMatch": "wrong credentials (the secret key does not match)",
    "InvalidAccessKeyId": "wrong credentials (unknown access key)",
    "AccessDenied": "access denied",
    "PreconditionFailed": "already exists (put-if-absent refused)",
}


def _error(uri: str, status: int | None, code: str, where: str) -> ObjectStoreError:
    hint = _HINTS.get(code) or (f"HTTP {status} {code}".strip() if status else code)
    reason = f"{hint} (HTTP {status} {code} from {where})" if status else f"{hint} ({where})"
    retry = status is None or status == 429 or status >= 500
    return (TransientObjectStoreError if retry else ObjectStoreError)(uri, status, code, reason)


# -- the S3 client (boto3) -------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """One object of a listing."""

    uri: str
    size: int
    etag: str
    mtime: float


@dataclass(frozen=True)
class Head:
    size: int
    etag: str


NEEDS_BOTO3 = "s3:// needs boto3: pip install 'batchrun[s3]'"


class S3Client:
    """The requests pyarrow does not expose, through one boto3 client (thread-safe) per
    process and settings: path-style, botocore's `standard` retries (503 SlowDown, 5xx,
    throttling, no answer) and every botocore error mapped to an `ObjectStoreError`."""

    def __init__(self, config: Resolved) -> None:
        self.config = config
        self.api = _boto3_client(config)

    def list(self, bucket: str, prefix: str) -> Iterator[Listed]:
        pages = self.api.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        with self._answering(f"{SCHEME}{bucket}/{prefix}"):
            for page in pages:
                for item in page.get("Contents", ()):
                    yield Listed(uri=f"{SCHEME}{bucket}/{item['Key']}", size=int(item["Size"]),
                                 etag=str(item.get("ETag", "")).strip('"'),
                                 mtime=item["LastModified"].timestamp())

    def probe(self, bucket: str, prefix: str) -> None:
        """One listing request of at most one key: the bucket exists, and the endpoint and
        credentials answer for it (SeaweedFS would create a missing bucket on the first PUT;
        AWS would refuse every PUT)."""
        with self._answering(f"{SCHEME}{bucket}/{prefix}"):
            self.api.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)

    def head(self, location: Location) -> Head:
        with self._answering(location.uri):
            answer = self.api.head_object(Bucket=location.bucket, Key=location.key)
        return Head(int(answer.get("ContentLength", 0)), str(answer.get("ETag", "")).strip('"'))

    def put_if_absent(self, location: Location, data: bytes | memoryview) -> None:
        """Write the object only if no object has its name (`If-None-Match: *`). The body is
        read from `data` itself (a pyarrow reader over it: no copy, and seekable for retries)."""
        import pyarrow as pa

        with self._answering(location.uri):
            self.api.put_object(Bucket=location.bucket, Key=location.key, IfNoneMatch="*",
                                Body=pa.BufferReader(pa.py_buffer(data)),
                                ContentType="application/octet-stream")

    def put(self, location: Location, data: bytes) -> None:
        with self._answering(location.uri):
            self.api.put_object(Bucket=location.bucket, Key=location.key, Body=data)

    def delete(self, location: Location) -> None:
        with self._answering(location.uri):
            self.api.delete_object(Bucket=location.bucket, Key=location.key)

    @contextmanager
    def _answering(self, uri: str) -> Iterator[None]:
        """botocore's errors (after its retries) as ObjectStoreErrors naming `uri` and the
        endpoint: one line, no secret (neither the messages nor the causes are kept)."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"endpoint {self.config.endpoint}"
        try:
            yield
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise _error(uri, status, _code(exc.response, status), where) from None
        except BotoCoreError as exc:
            raise _error(uri, None, _cause(exc), where) from None


def _boto3_client(config: Resolved) -> Any:
    """A boto3 S3 client that talks to the endpoint only: the credentials are given (no
    lookup of profiles or the instance metadata service), and so are the region and the
    endpoint. Checksums only where S3 requires them (S3-compatible stores may not know
    the newer checksum headers)."""
    try:
        import boto3
        import botocore.session
        from botocore.config import Config
    except ImportError:
        raise EnvironmentProblem(NEEDS_BOTO3) from None
    # no AWS_PROFILE lookup: a profile named in the environment but absent from ~/.aws
    # would fail every request, and credentials come from the [storage] variables only
    core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
    session = boto3.session.Session(
        aws_access_key_id=config.access_key, aws_secret_access_key=config.secret_key,
        aws_session_token=config.session_token, region_name=config.region,
        botocore_session=core)
    return session.client("s3", endpoint_url=config.endpoint, config=Config(
        s3={"addressing_style": "path"}, connect_timeout=config.timeout,
        read_timeout=config.timeout,
        retries={"mode": "standard", "total_max_attempts": config.max_attempts},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required"))


def _code(response: dict[str, Any], status: int | None) -> str:
    """The S3 error code; a HEAD answer has no body, so its code is the status phrase."""
    code = str(response.get("Error", {}).get("Code", ""))
    if (not code or code.isdigit()) and status:
        return HTTPStatus(status).phrase.replace(" ", "") if status in _STATUSES else str(status)
    return code


_STATUSES = {s.value for s in HTTPStatus}


def _cause(exc: Exception) -> str:
    """The innermost cause of a connection failure, as `Type: message` (one line)."""
    inner: BaseException = getattr(exc, "kwargs", {}).get("error") or exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    text = " ".join(str(inner).split())[:300]
    return f"{type(inner).__name__}: {text}"


# -- one client of each kind per process -----------------------------------------------------


_CURRENT: list[Settings] = [Settings()]
_CLIENTS: dict[Settings, S3Client] = {}
_FILESYSTEMS: dict[Settings, Any] = {}


def configure(settings: Settings | dict[str, Any] | None) -> Settings:
    """Make `settings` (a `[storage]` table) this process's default for `s3://` paths that
    are read by path alone (the readers, custom readers). Returns them."""
    chosen = settings if isinstance(settings, Settings) else Settings.of(settings)
    _CURRENT[0] = chosen
    return chosen


_MAKING = threading.Lock()
"""Held while a client is made: boto3 sessions are not thread-safe (the clients are)."""


def client(settings: Settings | None = None) -> S3Client:
    """This process's S3 client for `settings` (default: this process's), made on first use."""
    chosen = settings or _CURRENT[0]
    with _MAKING:
        if chosen not in _CLIENTS:
            _CLIENTS[chosen] = S3Client(_with_credentials(chosen))
    return _CLIENTS[chosen]


def _with_credentials(settings: Settings) -> Resolved:
    """The resolved settings, refused in one line when the credentials are not set (rather
    than letting an SDK look for them elsewhere, e.g. at 169.254.169.254)."""
    config = resolve(settings)
    if not (config.access_key and config.secret_key):
        raise ObjectStoreError(config.endpoint, None, "NoCredentials",
                               f"no credentials: set {settings.access_key_env} and"
                               f" {settings.secret_key_env}")
    return config


def filesystem(settings: Settings | None = None) -> Any:
    """pyarrow's S3FileSystem for `settings` (default: this process's), made on first use."""
    chosen = settings or _CURRENT[0]
    if chosen not in _FILESYSTEMS:
        from pyarrow import fs

        config = _with_credentials(chosen)
        _FILESYSTEMS[chosen] = fs.S3FileSystem(
            access_key=config.access_key, secret_key=config.secret_key,
            session_token=config.session_token, region=config.region,
            endpoint_override=config.netloc, scheme="https" if config.secure else "http",
            connect_timeout=config.timeout, request_timeout=config.timeout,
            retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=config.max_attempts))
    return _FILESYSTEMS[chosen]


@atexit.register
def _drop_filesystems() -> None:
    """Release the S3FileSystems before pyarrow's own exit hook finalizes the AWS SDK (atexit
    runs last-registered first): a file system alive at finalization can crash or hang
    the exit."""
    _FILESYSTEMS.clear()


# -- what the rest of batchrun calls ---------------------------------------------------------


def head(uri: str) -> Head:
    return client().head(Location.of(uri))


def listing(prefix_uri: str) -> Iterator[Listed]:
    where = Location.of(prefix_uri)
    return client().list(where.bucket, where.key)


def delete(uri: str) -> None:
    try:
        client().delete(Location.of(uri))
    except ObjectStoreError as exc:
        if not exc.missing:
            raise


def arrow_error(uri: str, exc: Exception) -> ObjectStoreError:
    """A pyarrow S3 error (an OSError whose text names the AWS error) as an ObjectStoreError."""
    text = str(exc)
    for marker, status, code in (("NO_SUCH_KEY", 404, "NoSuchKey"),
                                 ("Path does not exist", 404, "NoSuchKey"),
                                 ("NO_SUCH_BUCKET", 404, "NoSuchBucket"),
                                 ("ACCESS_DENIED", 403, "AccessDenied"),
                                 ("SIGNATURE_DOES_NOT_MATCH", 403, "SignatureDoesNotMatch"),
                                 ("INVALID_ACCESS_KEY_ID", 403, "InvalidAccessKeyId")):
        if marker in text:
            return _error(uri, status, code, "pyarrow")
    first = (text.strip().splitlines() or [type(exc).__name__])[0][:300]
    return TransientObjectStoreError(uri, None, "", f"read failed: {first}")
