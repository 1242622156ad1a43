"""The job file: a typed model of the TOML contract, validated at load time.

Every key is documented on its field. A bad job file raises `ConfigError` naming the
file, the key and what was expected, before anything starts.

Loading is pure: it reads the TOML and validates it, nothing else. What needs the
world — importing the job's custom reader and transform, probing its patterns in
DuckDB, reading fault injection from the environment — is checked at run start
(`execution/prepare.py`), and what the settings mean for a run is decided there too
(`execution/settings.py`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from batchrun import coltypes
from batchrun.errors import ConfigError, bounded
from batchrun.readers.custom import REFERENCE

_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"


def parse_size(value: Any) -> int:
    """'256MB' → 256_000_000; plain integers are bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
    if not match or match.group(2).upper() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as '256MB' or a number of bytes, got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def parse_rate(value: Any) -> float:
    """'3/s' → 3.0, '90/m' → 1.5, '100/h'; plain numbers are per second."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|m|h))?\s*", str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"expected a rate such as '3/s', '90/m' or '100/h', got {value!r}")
    return float(match.group(1)) / _DURATION_UNITS[match.group(2) or "s"]


def parse_duration(value: Any) -> float:
    """'200ms' → 0.2, '30s' → 30.0; plain numbers are seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
    if not match:
        raise ValueError(f"expected a duration such as '200ms' or '30s', got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MAX_NAME_LENGTH = 64
"""Longest job name and table name: both become file and folder names (locks, staging
partitions), which most file systems cap at 255 bytes."""


class JobSection(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=MAX_NAME_LENGTH)]
    """Identity of the job across runs (locks and history are per job); at most 64 characters."""
    table: Annotated[str, Field(pattern=_IDENTIFIER, max_length=MAX_NAME_LENGTH)]
    """Name of the staging table (a SQL identifier); at most 64 characters."""


class CsvOptions(_Section):
    delimiter: Annotated[str, Field(min_length=1, max_length=4)] = ","
    """A single character, or "auto" to sniff it from the header line."""
    encoding: str = "utf-8"
    """Text encoding; a UTF-8 byte-order mark is tolerated."""
    header: bool = True
    """Whether the first line names the columns."""


class SourceSection(_Section):
    paths: Annotated[list[str], Field(min_length=1)]
    """Glob patterns, relative to the job file's folder; ** recurses."""
    format: Literal["csv", "jsonl", "parquet"] = "csv"
    """Input format; .gz and .zst compressed csv/jsonl are read transparently."""
    csv: CsvOptions = CsvOptions()
    reader: Annotated[str, Field(pattern=REFERENCE)] | None = None
    """"package.module:function" taking a path and returning a pyarrow Table; replaces the
    built-in readers (the job file's folder is importable)."""
    max_file_bytes: int = parse_size("1GB")
    """Largest file, decompressed, that a worker reads: a bigger one is quarantined
    ("decompresses past max_file_bytes 1GB"). A worker holds a file's text and its parsed
    columns at once (~3 × its size), beside the batch's other files."""
    group_by: str = "parent_dir"
    """What a file's source is (per-source limits act on it): "parent_dir" (the supplier
    folder), "none" (one source), or a regular expression with a named group, searched in
    the file's path, e.g. "/(?P<supplier>[a-z]+)_[0-9]+\\.csv$". Patterns run on RE2
    (linear time; no backreferences or lookaround)."""
    fingerprint: Literal["stat", "sha256"] = "stat"
    """How a planned file is recognised as unchanged when a worker reads it: "stat" (size
    and mtime in nanoseconds, free) or "sha256" (also a hash of its content: planning
    reads every input file once more, and each worker reads its files twice; catches a
    same-size change whose mtime was restored). A changed file is quarantined."""
    settle: float = 0.0
    """A file modified less than this long before the plan started (e.g. "5s", "2m") is
    still being written: it is left for the next run (counted as settling). "0s": none."""

    @field_validator("max_file_bytes", mode="before")
    @classmethod
    def _file_bytes(cls, value: Any) -> int:
        return parse_size(value)

    @field_validator("settle", mode="before")
    @classmethod
    def _settle(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("paths")
    @classmethod
    def _no_nul(cls, value: list[str]) -> list[str]:
        for path in value:
            if "\0" in path:
                raise ValueError(f"a path cannot hold a NUL byte (got {bounded(repr(path), 80)})")
            check_object_uri(path)
        return value

    @field_validator("group_by")
    @classmethod
    def _grouping(cls, value: str) -> str:
        if value in ("parent_dir", "none"):
            return value
        try:
            compiled = compile_group_by(value)
        except ValueError as exc:
            raise ValueError(f"expected parent_dir, none or a regular expression RE2 accepts"
                             f" ({exc})") from None
        if not compiled.groupindex:
            raise ValueError("expected parent_dir, none or a regular expression with a named "
                             "group such as (?P<source>...)")
        return value


def compile_group_by(pattern: str) -> Any:
    """`pattern` compiled by RE2 (a linear-time engine: a group_by such as `(a+)+b` on a
    long path cannot stall planning); ValueError with RE2's reason if it refuses it."""
    import re2

    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        raise ValueError(reason.decode(errors="replace") if isinstance(reason, bytes)
                         else str(reason)) from None


class TransformSection(_Section):
    function: Annotated[str, Field(pattern=REFERENCE)]
    """"package.module:function" taking and returning a pyarrow Table of good rows of one
    file (with its `_file` and `_line` columns), applied after validation."""


class BatchSection(_Section):
    max_files: Annotated[int, Field(ge=1)] = 500
    """A batch closes when it holds this many files ... (bytes usually decide: each batch
    costs ~10-20 ms of fixed work, two Parquet files and a checkpoint, so batches of
    50 files of 20 KB spent about half their time on that)"""
    max_bytes: int = parse_size("256MB")
    """... or this many bytes of input, whichever comes first."""

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_size(value)


class CircuitBreaker(_Section):
    failures: Annotated[int, Field(ge=0)] = 3
    """Consecutive failed batches of one source that open its breaker; 0 turns it off."""
    cooldown: float = 30.0
    """How long an open breaker stops the source before one probe batch is sent. If the
    probe fails too, the source's remaining batches are skipped (resume retries them)."""

    @field_validator("cooldown", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class ExecutionSection(_Section):
    mode: Literal["parallel", "sequential"] = "parallel"
    """"parallel" uses the limits below; "sequential" runs one batch at a time in plan
    order on one worker and stops at the first failed batch (fail fast)."""
    workers: Annotated[int, Field(ge=1, le=1024)] = 2
    """Number of worker actors."""
    per_source_concurrency: Annotated[int, Field(ge=1)] | None = 3
    """At most this many batches of one source in flight; "unlimited" lifts the cap."""
    stagger: float = 0.0
    """Delay between the first dispatch of successive sources, e.g. "200ms"."""
    max_bytes_in_flight: Annotated[int, Field(ge=1)] | Literal["unlimited"] | None = None
    """Input bytes of the batches in flight, at most; default 1/8 of the memory available
    when the run starts; "unlimited" lifts it. A bigger batch still runs, alone."""
    rate_limit: float | None = None
    """Batch starts per second of each source, e.g. "3/s" or "20/m"; None or "unlimited":
    no limit."""
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    address: str | None = None
    """Ray cluster to join ("auto", "ray://host:10001", "host:6379"); None starts a local one."""
    max_in_flight: Annotated[int, Field(ge=1)] | None = None
    """Batches dispatched but not yet finished; default 2 × workers."""
    max_retries: Annotated[int, Field(ge=0)] = 3
    """Attempts per batch after the first when a worker dies or an I/O error is transient."""
    drain_timeout: float = 30.0
    """On SIGINT/SIGTERM, how long to wait for in-flight batches before abandoning them."""
    batch_timeout: float | None = None
    """A batch running longer has its worker killed and replaced, and is retried; None: off."""
    retry_budget: Annotated[int, Field(ge=0)] = 100
    """Retries allowed in the whole run; once spent, the run stops dispatching (fail fast)."""
    pool: Literal["auto", "ray", "inline"] = "auto"
    """Where batches run: "ray" (worker actors on a local Ray instance or the cluster),
    "inline" (in the batchrun process itself: no Ray started) or "auto": inline for a small
    local plan (see execution/settings.py `choose_pool`), Ray otherwise."""

    @field_validator("drain_timeout", "batch_timeout", "stagger", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("per_source_concurrency", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        return None if value == "unlimited" else value

    @field_validator("max_bytes_in_flight", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> int | str | None:
        return value if value in (None, "unlimited") else parse_size(value)

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> float | None:
        return None if value in (None, "unlimited") else parse_rate(value)


class StagingSection(_Section):
    dir: str = "staging"
    """Staging root, relative to the job file's folder."""

    @field_validator("dir")
    @classmethod
    def _dir(cls, value: str) -> str:
        check_object_uri(value)
        return value


_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")
"""What botocore accepts as a bucket name (S3 itself asks for less: 3-63, lower case)."""


def check_object_uri(path: str) -> None:
    """A ValueError for a path that is meant as an object URI but is not one: `S3://`,
    `s3:/bucket` (read as a local folder named "s3:" otherwise), no bucket, a bucket
    that is a wildcard (a pattern lists one bucket's keys), or a key with an empty, "."
    or ".." folder name (`s3://b/a//x`: SeaweedFS stores it as `a/x`, so the run would
    not find what it wrote; pyarrow's S3 file system refuses such a path)."""
    if path[:3].lower() == "s3:" and not path.startswith("s3://"):
        raise ValueError(f"expected s3://bucket/... (lower case, two slashes), got"
                         f" {bounded(repr(path), 80)}")
    if path.startswith("s3://"):
        bucket = path.removeprefix("s3://").partition("/")[0]
        if not bucket:
            raise ValueError(f"expected s3://bucket/..., got {bounded(repr(path), 80)} (no bucket)")
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"expected a bucket name without wildcards (letters, digits, '.',"
                             f" '-', '_'), got {bounded(repr(bucket), 80)} in {bounded(repr(path), 80)}")
        names = path.removeprefix("s3://").rstrip("/").split("/")[1:]
        if any(name in ("", ".", "..") for name in names):
            raise ValueError(f"expected s3://bucket/key without empty, '.' or '..' folder names"
                             f" (stores fold them, pyarrow refuses them), got {bounded(repr(path), 80)}")


class StorageSection(_Section):
    """Where `s3://` paths (sources, staging) are served. Every key is optional: by default
    the usual AWS variables decide. Secrets are never keys of the job file: name the
    variables that hold them."""

    endpoint: str | None = None
    """"http(s)://host:port" of an S3-compatible server; default AWS_ENDPOINT_URL_S3, then
    AWS_ENDPOINT_URL, then AWS S3 itself. "http://" allows plain HTTP."""
    region: str | None = None
    """Signing region; default AWS_DEFAULT_REGION, then AWS_REGION, then us-east-1."""
    access_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "AWS_ACCESS_KEY_ID"
    """The environment variable holding the access key id (read by each worker)."""
    secret_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "AWS_SECRET_ACCESS_KEY"
    """The environment variable holding the secret key (read by each worker, never stored)."""
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    """Attempts per request when the store throttles (503 SlowDown), fails (5xx) or does not
    answer; 403 and 404 are never retried. A batch whose reads still fail is retried
    as a whole (`[execution] max_retries`)."""
    timeout: Annotated[float, Field(gt=0)] = 10.0
    """Seconds to connect, and to wait for an answer, per request."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = re.fullmatch(r"(https?)://([^/@\s]+)/?", value)
        if "@" in value:
            raise ValueError("credentials do not belong in the endpoint: set them in the"
                             " environment (access_key_env, secret_key_env)")
        if not match or not _valid_port(value):
            raise ValueError(f"expected http(s)://host[:port], got {bounded(repr(value), 80)}")
        return value


def _valid_port(url: str) -> bool:
    """A port, if given, is a number from 1 to 65535 (`host:99999` or `host:x` is not)."""
    try:
        port = urlsplit(url).port
    except ValueError:
        return False
    return port != 0 and urlsplit(url).hostname is not None


class ValidationSection(_Section):
    max_reject_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    """A file with a larger share of rejected rows is quarantined whole; 1.0 never does."""
    on_unknown_columns: Literal["reject_file", "ignore"] = "reject_file"
    """A file with columns the schema does not name is quarantined, or they are dropped."""
    on_missing_columns: Literal["reject_file", "null"] = "reject_file"
    """A file lacking a schema column is quarantined, or the column is NULL (not if required)."""
    max_failed_files: Annotated[int, Field(ge=0)] = 0
    """Stop dispatching once this many files have failed; 0 means no limit."""
    max_run_reject_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    """A run whose share of rejected rows (of all rows read from committed files) is larger
    ends failed (exit 1); 1.0 turns the check off. A run that read rows and staged none
    fails whatever this says."""


class ColumnSpec(_Section):
    type: str
    """string | int32 | int64 | float64 | decimal(p,s) | bool | date | timestamp"""
    format: str | None = None
    """strptime format for date/timestamp columns, e.g. "%Y-%m-%d %H:%M:%S"."""
    required: bool = False
    """An empty or missing cell is a reject (rule `required`)."""
    unique: bool = False
    """Across the whole run, only the first occurrence (file, line order) of a value is staged;
    later ones are rejects (rule `unique`)."""
    min: float | int | str | None = None
    """Smallest allowed value (numbers, dates, timestamps)."""
    max: float | int | str | None = None
    """Largest allowed value."""
    allowed: list[str | int | float] | None = None
    """The only values allowed (rule `allowed`)."""
    pattern: str | None = None
    """A regular expression the whole raw cell must match (rule `pattern`)."""
    max_length: Annotated[int, Field(ge=1)] | None = None
    """Longest allowed string, in characters (rule `max_length`)."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return value

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        return coltypes.normalize(value)


class SchemaSection(_Section):
    columns: dict[str, ColumnSpec]
    """Typed columns; their order is the output order."""

    @field_validator("columns")
    @classmethod
    def _names(cls, value: dict[str, ColumnSpec]) -> dict[str, ColumnSpec]:
        if not value:
            raise ValueError("expected at least one column")
        for name in value:
            if name.startswith("_"):
                raise ValueError(f"column {name!r}: names starting with '_' are reserved")
        return value


class JobConfig(_Section):
    job: JobSection
    source: SourceSection
    batch: BatchSection = BatchSection()
    execution: ExecutionSection = ExecutionSection()
    staging: StagingSection = StagingSection()
    storage: StorageSection = StorageSection()
    validation: ValidationSection = ValidationSection()
    transform: TransformSection | None = None
    faults: dict[str, Any] | None = None
    """Fault injection for tests and drills (see batchrun/faults.py); checked at run start."""
    schema_: SchemaSection | None = Field(default=None, alias="schema")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Job(BaseModel):
    """A loaded job: the validated config plus where it came from."""

    model_config = ConfigDict(frozen=True)

    config: JobConfig
    path: Path
    """Absolute path of the job file."""
    staging_dir: Path | str
    """Absolute staging root (job key, or an override): a Path, or an `s3://` URI (str)."""
    given: str = ""
    """The job file as it was named (`load_job`'s argument): error lines name it so."""

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        return self.config.job.name

    @property
    def table(self) -> str:
        return self.config.job.table


def load_job(path: str | Path, overrides: dict[str, Any] | None = None) -> Job:
    """Read, validate and resolve a job file. `overrides` maps dotted keys to values.

    Pure: no user code is imported and the environment is not read (see the module's
    docstring for where that happens)."""
    job_path = Path(path).expanduser().resolve()
    raw = _read_toml(job_path)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_dotted(raw, dotted, value)
    config = validate_config(raw, str(path))
    return Job(config=config, path=job_path, staging_dir=_staging_root(config, job_path),
               given=str(path))


def _staging_root(config: JobConfig, job_path: Path) -> Path | str:
    if config.staging.dir.startswith("s3://"):
        return config.staging.dir.rstrip("/")
    staging = Path(config.staging.dir).expanduser()
    return (staging if staging.is_absolute() else job_path.parent / staging).resolve()


def validate_config(raw: dict[str, Any], where: str) -> JobConfig:
    try:
        return JobConfig.model_validate(_canonical_sections(raw, where))
    except ValidationError as exc:
        raise _config_error(where, exc) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "job file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "", "expected a TOML job file, got a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML ({exc})") from None


SECTION_SPELLINGS = {"schema_": "schema"}
"""Python field names that pydantic would also accept for a section (`populate_by_name`):
the job file and `--set` know each section by one name, so these are read as that name."""


def canonical_key(dotted: str) -> str:
    """`dotted` with its section spelled as the job file spells it (`schema_.x` → `schema.x`)."""
    section, dot, rest = dotted.strip().partition(".")
    return SECTION_SPELLINGS.get(section, section) + dot + rest


def _canonical_sections(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """`raw` with every section under its job-file name; one given under both names is an
    error naming both (never a misleading "unknown key")."""
    canonical = dict(raw)
    for spelling, name in SECTION_SPELLINGS.items():
        if spelling in canonical:
            if name in canonical:
                raise ConfigError(where, spelling, f"the same section as {name}: give it once,"
                                  f" as {name}")
            canonical[name] = canonical.pop(spelling)
    return canonical


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = canonical_key(dotted).split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def _config_error(where: str, exc: ValidationError) -> ConfigError:
    """Turn pydantic's first error into one line: file, dotted key, what was expected."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]).replace("schema_", "schema")
    kind, given = error["type"], error.get("input")
    if kind == "missing":
        return ConfigError(where, key, "missing required key")
    if kind == "extra_forbidden":
        return ConfigError(where, key, "unknown key")
    message = str(error["msg"]).removeprefix("Value error, ")
    if "got " not in message:
        message = f"{message} (got {bounded(repr(given), 80)})"
    return ConfigError(where, key, message)
