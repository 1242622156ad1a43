"""Object storage: `s3://bucket/key` sources and staging, without a cloud SDK.

Two clients, each made lazily in the process that uses it (a Ray actor makes its own; a
client is never pickled from the driver, and the AWS SDK inside pyarrow is not fork-safe):

- pyarrow's `S3FileSystem` reads objects: source files (streamed, decompressed) and the
  staged Parquet that `batchrun query` hands to DuckDB. It is given the endpoint, region
  and credentials explicitly: a bare `S3FileSystem()` ignores `AWS_ENDPOINT_URL(_S3)`.
- `S3Client`, a small SigV4 client over `http.client`, does what pyarrow does not expose:
  listings with ETags, HEAD, the put-if-absent write (`If-None-Match: *`) that commits a
  staged object, and DELETE.

Settings come from the job's `[storage]` table (endpoint, region, the names of the
credential variables; no secrets) and else from the usual AWS variables. Secrets are read
from the environment of the process that needs them and never leave it: not in a
setting, an error, a log line or the catalog. Throttling (503 SlowDown) and 5xx answers
are retried with backoff; 403 and 404 are final.
"""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import hmac
import http.client
import os
import re
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

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


# -- the SigV4 client ------------------------------------------------------------------------


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


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Client:
    """The requests pyarrow does not expose, signed with AWS Signature Version 4,
    path-style (`endpoint/bucket/key`), retried with backoff when the answer is transient."""

    def __init__(self, config: Resolved) -> None:
        self.config = config

    def list(self, bucket: str, prefix: str) -> Iterator[Listed]:
        token: str | None = None
        while True:
            params = {"list-type": "2", "prefix": prefix, **({"continuation-token": token}
                                                             if token else {})}
            body = self._request("GET", bucket, "", params=params).body
            root = ElementTree.fromstring(body)
            for item in root.iter(f"{_NS}Contents"):
                yield _listed(bucket, item)
            token = root.findtext(f"{_NS}NextContinuationToken")
            if root.findtext(f"{_NS}IsTruncated") != "true" or not token:
                return

    def head(self, location: Location) -> Head:
        answer = self._request("HEAD", location.bucket, location.key)
        return Head(int(answer.headers.get("content-length", 0)),
                    answer.headers.get("etag", "").strip('"'))

    def put_if_absent(self, location: Location, data: bytes | memoryview) -> None:
        """Write the object only if no object has its name (`If-None-Match: *`)."""
        self._request("PUT", location.bucket, location.key, body=data,
                      headers={"if-none-match": "*", "content-type": "application/octet-stream"})

    def put(self, location: Location, data: bytes) -> None:
        self._request("PUT", location.bucket, location.key, body=data)

    def delete(self, location: Location) -> None:
        self._request("DELETE", location.bucket, location.key)

    def _request(self, method: str, bucket: str, key: str, params: dict[str, str] | None = None,
                 body: bytes | memoryview = b"", headers: dict[str, str] | None = None
                 ) -> _Answer:
        uri = f"{SCHEME}{bucket}/{key}"
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                return self._once(method, bucket, key, params or {}, body, headers or {}, uri)
            except TransientObjectStoreError:
                if attempt == self.config.max_attempts:
                    raise
                time.sleep(min(2.0, 0.05 * 2 ** attempt))
        raise AssertionError("unreachable")

    def _once(self, method: str, bucket: str, key: str, params: dict[str, str],
              body: bytes | memoryview,
              headers: dict[str, str], uri: str) -> _Answer:
        path = "/" + quote(bucket, safe="") + ("/" + quote(key, safe="/~") if key else "")
        query = "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}"
                         for k, v in sorted(params.items()))
        signed = self._signed(method, path, query, body, headers)
        connection_type = (http.client.HTTPSConnection if self.config.secure
                           else http.client.HTTPConnection)
        connection = connection_type(self.config.netloc, timeout=self.config.timeout)
        try:
            connection.request(method, path + (f"?{query}" if query else ""), body=body or None,
                               headers=signed)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _error(uri, None, f"{type(exc).__name__}: {exc}",
                         f"endpoint {self.config.endpoint}") from None
        finally:
            connection.close()
        if response.status >= 300:
            code = _error_code(data) or response.reason.replace(" ", "")
            raise _error(uri, response.status, code, f"endpoint {self.config.endpoint}")
        return _Answer({k.lower(): v for k, v in response.getheaders()}, data)

    def _signed(self, method: str, path: str, query: str, body: bytes | memoryview,
                headers: dict[str, str], now: str | None = None) -> dict[str, str]:
        now = now or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        all_headers = {**headers, "host": self.config.netloc, "x-amz-date": now,
                       "x-amz-content-sha256": hashlib.sha256(body).hexdigest() if body
                       else _EMPTY_SHA256}
        if self.config.session_token:
            all_headers["x-amz-security-token"] = self.config.session_token
        if not (self.config.access_key and self.config.secret_key):
            return all_headers  # anonymous
        names = sorted(all_headers)
        canonical = "\n".join([method, path, query,
                               "".join(f"{n}:{all_headers[n].strip()}\n" for n in names),
                               ";".join(names), all_headers["x-amz-content-sha256"]])
        scope = f"{now[:8]}/{self.config.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", now, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(self._key(now[:8]), to_sign.encode(), hashlib.sha256).hexdigest()
        all_headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.config.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}")
        return all_headers

    def _key(self, day: str) -> bytes:
        key = ("AWS4" + (self.config.secret_key or "")).encode()
        for part in (day, self.config.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key


@dataclass(frozen=True)
class _Answer:
    headers: dict[str, str]
    body: bytes


def _error_code(body: bytes) -> str | None:
    found = re.search(rb"<Code>([^<]{1,100})</Code>", body)
    return found.group(1).decode(errors="replace") if found else None


def _listed(bucket: str, item: ElementTree.Element) -> Listed:
    modified = item.findtext(f"{_NS}LastModified") or "1970-01-01T00:00:00Z"
    return Listed(uri=f"{SCHEME}{bucket}/{item.findtext(f'{_NS}Key')}",
                  size=int(item.findtext(f"{_NS}Size") or 0),
                  etag=(item.findtext(f"{_NS}ETag") or "").strip('"'),
                  mtime=dt.datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp())


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


def client(settings: Settings | None = None) -> S3Client:
    chosen = settings or _CURRENT[0]
    if chosen not in _CLIENTS:
        _CLIENTS[chosen] = S3Client(resolve(chosen))
    return _CLIENTS[chosen]


def filesystem(settings: Settings | None = None) -> Any:
    """pyarrow's S3FileSystem for `settings` (default: this process's), made on first use."""
    chosen = settings or _CURRENT[0]
    if chosen not in _FILESYSTEMS:
        from pyarrow import fs

        config = resolve(chosen)
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
