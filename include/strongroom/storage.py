"""Object storage: one bucket in one region, behind a small interface over an S3 client.

The client comes from the Airflow adapter (the amazon provider's S3Hook) or from any boto3 factory; this
module never sees a credential. Large objects go up as multipart uploads whose memory is bounded by
``part size x concurrency`` and whose part size grows so no object can exceed the provider's part-count
limit. Downloads are ranged and parallel with the same bound.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import io
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as Urllib3Error

from strongroom.errors import IntegrityError, NotFoundError, StorageError
from strongroom.progress import duration_text

if TYPE_CHECKING:
    from strongroom.config import TransferConfig

log = logging.getLogger(__name__)

MiB = 1 << 20
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
_MISSING_CODES = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
# answers worth another attempt of the same part or range: throttling and the server's own failures
_TRANSIENT_CODES = {"SlowDown", "503", "ServiceUnavailable", "InternalError", "500", "RequestTimeout",
                    "RequestTimeoutException", "ThrottlingException", "Throttling", "502", "BadGateway"}
T = TypeVar("T")


def _return_transfer_buffers_to_the_os(threshold: int = 4 * MiB) -> bool:
    """Make glibc map every block of ``threshold`` or more on its own, so it goes back to the OS when freed.

    By default glibc raises its mmap threshold to the largest block freed (up to 32 MiB): after the first
    part is freed, parts come from the heap of whichever thread allocated them, and each transfer thread's
    arena keeps the parts it freed. Parallel transfers then grew the process by ~100 MiB that was never in
    use at once. A fixed threshold turns that adjustment off; a part or range (5 MiB and up) costs one
    mmap/munmap, nothing next to moving its bytes. Does nothing where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


_return_transfer_buffers_to_the_os()


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime | None = None


@dataclass(frozen=True)
class Version:
    """One version or delete marker of a key in a versioned bucket (``version_id`` None: unversioned)."""

    key: str
    version_id: str | None
    last_modified: datetime
    is_latest: bool
    delete_marker: bool
    size: int = 0


@dataclass(frozen=True)
class Upload:
    """An unfinished multipart upload."""

    key: str
    upload_id: str
    initiated: datetime


def _vid(item: dict[str, Any]) -> str | None:
    vid = item.get("VersionId")
    return None if vid in (None, "null") else str(vid)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return _code(exc) in _TRANSIENT_CODES or status >= 500
    return isinstance(exc, BotoCoreError | Urllib3Error | OSError)


@dataclass(frozen=True)
class RetryPolicy:
    """How data transfers (parts and ranges) survive a flaky region, and when they give up.

    Each part or range is tried up to ``attempts`` times, sleeping a random time up to ``delay`` doubled
    per attempt (full jitter) in between, so a 503 SlowDown or a reset costs that one part, never the
    object. Whatever the attempts left, a transfer that has moved no byte for ``stall_seconds`` gives up:
    the region is stalled (the data client's socket timeout is the same, so one silent request cannot
    hold it longer).
    """

    stall_seconds: float = 60.0
    attempts: int = 6
    delay: float = 1.0

    @classmethod
    def of(cls, transfer: TransferConfig) -> RetryPolicy:
        return cls(transfer.stall_timeout.total_seconds(), transfer.part_attempts,
                   transfer.retry_delay.total_seconds())

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, self.delay * 2 ** (attempt - 1))  # noqa: S311 (jitter, not secrecy)


class Progress:
    """When a transfer last moved a byte; shared by the threads of one upload or download."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def tick(self) -> None:
        self.last = time.monotonic()

    def idle(self) -> float:
        return time.monotonic() - self.last


class _ProgressBody(io.BytesIO):
    """A part's body that marks progress as the HTTP client reads it to send (seekable, for re-sends).

    Only bytes past the furthest any attempt of this part got count: a re-sent byte is no progress, and
    the first few MB a dead endpoint's socket buffers swallow are counted once, not once per attempt.
    """

    def __init__(self, data: bytes, progress: Progress, furthest: list[int]) -> None:
        super().__init__(data)
        self._progress, self._furthest = progress, furthest

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if self.tell() > self._furthest[0]:
            self._furthest[0] = self.tell()
            self._progress.tick()
        return data


class ObjectStore:
    """A bucket reached through an S3 client. ``where`` names it in every error message."""

    def __init__(
        self, client: Any, bucket: str, *, region: str, max_parts: int = 10000, lock_mode: str | None = None,
        data_client: Any | Callable[[], Any] | None = None, retry: RetryPolicy | None = None,
    ) -> None:
        self.client = client  # control requests: short timeouts, botocore's retries
        self._data_client = data_client  # parts and ranges: the stall timeout, our retries (built when used)
        self._data_lock = threading.Lock()
        self.retry = retry or RetryPolicy()
        self.bucket = bucket
        self.region = region
        self.max_parts = max_parts
        self.lock_mode = lock_mode.upper() if lock_mode and lock_mode != "off" else None

    @property
    def data_client(self) -> Any:
        """The client for parts and ranges; a factory given for it is called once, on first use (a client
        costs tens of milliseconds to build, and most stores only ever make control requests)."""
        with self._data_lock:
            if self._data_client is None:
                self._data_client = self.client
            elif callable(self._data_client) and not hasattr(self._data_client, "meta"):
                self._data_client = self._data_client()
            return self._data_client

    def lock_args(self, retain_until: datetime | None) -> dict[str, Any]:
        """S3 Object Lock arguments for a write, when this region locks and a date is given."""
        if self.lock_mode is None or retain_until is None:
            return {}
        return {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate": retain_until}

    def apply_lock(self, key: str, retain_until: datetime) -> None:
        """Set the object's retention explicitly: some providers drop lock headers on multipart uploads."""
        if self.lock_mode is None:
            return
        try:
            self.client.put_object_retention(
                Bucket=self.bucket, Key=key, Retention={"Mode": self.lock_mode, "RetainUntilDate": retain_until}
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "locking", key) from None

    def confirm_lock(self, key: str, retain_until: datetime) -> None:
        """Read the lock back: some providers accept the headers and ignore them."""
        if self.lock_mode is None:
            return
        try:  # HeadObject reports the lock to a caller allowed to read it (as GetObjectRetention does)
            meta = self.client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"{self.where}: object lock on {key} cannot be read back: {exc}") from None
        until = meta.get("ObjectLockRetainUntilDate")
        if meta.get("ObjectLockMode") != self.lock_mode or until is None:
            raise IntegrityError(f"{self.where}: {key} is not locked although object_lock is on (provider ignored it)")
        if until > retain_until + timedelta(seconds=1):
            raise IntegrityError(f"{self.where}: {key} is locked until {until}, past its erasure time {retain_until}")

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    @property
    def where(self) -> str:
        return f"s3://{self.bucket} (region {self.region})"

    def transfer(self, call: Callable[[], T], progress: Progress, what: str, key: str) -> T:
        """Run one part or range, retrying transient failures until it succeeds, the attempts run out,
        or the region has moved no byte for the stall deadline. Raises :class:`StorageError` naming the
        region either way."""
        attempt = 0
        while True:
            attempt += 1
            try:
                result = call()
            except (ClientError, BotoCoreError, Urllib3Error, OSError) as exc:
                if not _transient(exc):
                    raise self._fail(exc, what, key) from None
                idle = progress.idle()
                if idle >= self.retry.stall_seconds:
                    raise StorageError(
                        f"{self.where} stalled: no progress for {duration_text(idle)} (stall_timeout "
                        f"{duration_text(self.retry.stall_seconds)}) while {what} {key}: {_first_line(exc)}"
                    ) from None
                if attempt >= self.retry.attempts:
                    raise StorageError(
                        f"{what} s3://{self.bucket}/{key} failed after {attempt} attempts "
                        f"(region {self.region}): {_first_line(exc)}"
                    ) from None
                pause = min(self.retry.backoff(attempt), max(0.0, self.retry.stall_seconds - idle))
                log.info("%s %s in %s: %s; attempt %d in %.1fs", what, key, self.region, _first_line(exc),
                         attempt + 1, pause)
                time.sleep(pause)
                continue
            progress.tick()
            return result

    def _fail(self, exc: Exception, action: str, key: str | None = None) -> Exception:
        target = f"s3://{self.bucket}/{key}" if key else self.where
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code == "NoSuchBucket" or (key is None and code in _MISSING_CODES):
                return NotFoundError(f"bucket {self.bucket!r} does not exist in region {self.region}")
            if code in _MISSING_CODES:
                return NotFoundError(f"{target} does not exist")
            message = exc.response.get("Error", {}).get("Message") or code
            return StorageError(f"{action} {target} failed: {code}: {message}")
        return StorageError(f"{action} {target} failed (region {self.region}): {_first_line(exc)}")

    def check_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "reaching bucket") from None

    def ensure_bucket(self) -> bool:
        """Create the bucket when it does not exist (a review bucket); True when it was created."""
        if self.bucket_exists():
            return False
        self.create_bucket()
        return True

    def put_bytes(self, key: str, data: bytes, *, retain_until: datetime | None = None) -> None:
        extra = self.lock_args(retain_until)
        if extra:  # S3 requires an integrity header on locked writes
            extra["ContentMD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "writing", key) from None

    def put_data(self, key: str, data: bytes, *, retain_until: datetime | None = None,
                 progress: Progress | None = None) -> None:
        """Write a data object in one request (a chunk: megabytes, not gigabytes) on the data path: the
        stall deadline and per-request retries of a part (:meth:`transfer`), not the control timeout."""
        extra = self.lock_args(retain_until)
        if extra:
            extra["ContentMD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324
        progress = progress or Progress()
        furthest = [0]

        def put() -> Any:
            return self.data_client.put_object(Bucket=self.bucket, Key=key,
                                               Body=_ProgressBody(data, progress, furthest), **extra)

        self.transfer(put, progress, "writing", key)

    def get_bytes(self, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "reading", key) from None

    def head(self, key: str) -> ObjectInfo | None:
        try:
            meta = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                return None
            raise self._fail(exc, "inspecting", key) from None
        except BotoCoreError as exc:
            raise self._fail(exc, "inspecting", key) from None
        return ObjectInfo(key, int(meta["ContentLength"]), meta.get("LastModified"))

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, across all pages."""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"], int(item["Size"]), item.get("LastModified"))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "listing", prefix) from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "deleting", key) from None

    def erase_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` with all its versions and delete markers (an erasure, also
        in a versioned bucket); the number of versions deleted."""
        return self.delete_versions([(v.key, v.version_id) for v in self.versions(prefix)])

    def abort_stale_uploads(self, prefix: str, started_before: datetime) -> int:
        """Abort unfinished multipart uploads under ``prefix`` begun before ``started_before``."""
        return self.abort_uploads(prefix, lambda upload: upload.initiated < started_before)

    def abort_uploads(self, prefix: str, leftover: Callable[[Upload], bool]) -> int:
        """Abort the unfinished multipart uploads under ``prefix`` that ``leftover`` picks (one listing)."""
        aborted = 0
        for upload in list(self.uploads(prefix)):
            if leftover(upload):
                self.abort_upload(upload.key, upload.upload_id)
                log.warning("aborted unfinished upload of s3://%s/%s", self.bucket, upload.key)
                aborted += 1
        return aborted

    def uploads(self, prefix: str = "") -> Iterator[Upload]:
        """Every unfinished multipart upload under ``prefix``, across all pages."""
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for up in page.get("Uploads", []):
                    yield Upload(up["Key"], up["UploadId"], up["Initiated"])
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "listing unfinished uploads in", None) from None

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one unfinished upload; one that is gone already counts as aborted."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                raise self._fail(exc, "aborting upload of", key) from None
        except BotoCoreError as exc:
            raise self._fail(exc, "aborting upload of", key) from None

    def versions(self, prefix: str) -> Iterator[Version]:
        """Every version and delete marker under ``prefix`` (an unversioned bucket lists its objects)."""
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Versions", []):
                    yield Version(item["Key"], _vid(item), item["LastModified"], bool(item.get("IsLatest")), False,
                                  int(item.get("Size") or 0))
                for item in page.get("DeleteMarkers", []):
                    yield Version(item["Key"], _vid(item), item["LastModified"], bool(item.get("IsLatest")), True)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "listing versions under", prefix) from None

    def delete_versions(self, versions: list[tuple[str, str | None]]) -> int:
        """Delete these (key, version id) pairs for good, a thousand per request; the number deleted.
        A version id of None is the null version (an object written while the bucket was unversioned or
        its versioning suspended): it is named as ``null``, so it is deleted too rather than hidden behind
        a new delete marker when the bucket is versioned now."""
        for start in range(0, len(versions), 1000):
            batch = [{"Key": k, "VersionId": v or "null"} for k, v in versions[start : start + 1000]]
            try:
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, "deleting from", None) from None
            if response.get("Errors"):
                first = response["Errors"][0]
                raise StorageError(f"{self.where}: deleting {first.get('Key')} failed: {first.get('Code')} "
                                   f"{first.get('Message', '')}".strip())
        return len(versions)

    def open_version(self, key: str, version_id: str | None = None) -> Any:
        """The body of one version of ``key`` (its latest when None): a stream the caller closes."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        try:
            return self.client.get_object(**args)["Body"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "reading", key) from None

    def stream_version(self, key: str, version_id: str | None = None, chunk: int = MiB) -> Iterator[bytes]:
        """The bytes of one version of ``key``, in chunks."""
        body = self.open_version(key, version_id)
        try:
            yield from body.iter_chunks(chunk)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "reading", key) from None
        finally:
            body.close()

    def read_version(self, key: str, version_id: str | None = None) -> bytes:
        """All the bytes of one version of ``key`` (small objects)."""
        return b"".join(self.stream_version(key, version_id))

    def copy_within(self, source: ObjectStore, key: str, size: int, *, part_size: int, max_part_size: int,
                    single_copy_limit: int, retain_until: datetime | None = None) -> str | None:
        """Copy ``key`` from ``source`` (a bucket on the same endpoint) into this bucket without the bytes
        leaving the provider: one CopyObject up to ``single_copy_limit``, a multipart copy above. Returns
        how it was copied, or None when the provider refused (the caller streams the bytes instead)."""
        try:
            return self._copy_within(source, key, size, part_size, max_part_size, single_copy_limit, retain_until)
        except ClientError as exc:
            log.warning("server-side copy to %s refused (%s); streaming the bytes instead", self.where, _code(exc))
            return None

    def _copy_within(self, source: ObjectStore, key: str, size: int, part_size: int, max_part_size: int,
                     single_copy_limit: int, retain_until: datetime | None) -> str:
        client = self.data_client  # copying takes the provider a while: the stall timeout
        if size <= single_copy_limit:
            client.copy_object(Bucket=self.bucket, Key=key, CopySource={"Bucket": source.bucket, "Key": key},
                               **self.lock_args(retain_until))
            return "server-side copy"
        upload_id = client.create_multipart_upload(Bucket=self.bucket, Key=key,
                                                   **self.lock_args(retain_until))["UploadId"]
        try:
            sizer = PartSizer(part_size, max_part_size, self.max_parts, size)
            parts, offset, number = [], 0, 1
            while offset < size:
                length = min(sizer.size_for(number), size - offset)
                response = client.upload_part_copy(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                    CopySource={"Bucket": source.bucket, "Key": key},
                    CopySourceRange=f"bytes={offset}-{offset + length - 1}",
                )
                parts.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})
                offset += length
                number += 1
            client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                             MultipartUpload={"Parts": parts})
        except BaseException:
            try:
                client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except (ClientError, BotoCoreError) as exc:
                log.error("could not abort multipart copy of %s in %s: %s", key, self.where, exc)
            raise
        return "server-side multipart copy"

    # ---- bucket configuration ----------------------------------------------------------------------------

    def bucket_exists(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise self._fail(exc, "reaching bucket") from None
        except BotoCoreError as exc:
            raise self._fail(exc, "reaching bucket") from None

    def list_buckets(self, prefix: str) -> list[tuple[str, datetime]]:
        """The buckets this store's credentials own whose names start with ``prefix``, with their creation
        times (ListBuckets; the store's own bucket need not exist)."""
        try:
            listed = self.client.list_buckets().get("Buckets", [])
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"listing the buckets of {self.endpoint} failed (region {self.region}): "
                               f"{_first_line(exc)}") from None
        return [(b["Name"], b["CreationDate"]) for b in listed if str(b.get("Name", "")).startswith(prefix)]

    def create_bucket(self, *, object_lock: bool = False, tags: list[dict[str, str]] | None = None) -> None:
        args: dict[str, Any] = {"Bucket": self.bucket}
        if self.region and self.region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        if object_lock:
            args["ObjectLockEnabledForBucket"] = True
        try:
            self.client.create_bucket(**args)
            if tags:
                self.client.put_bucket_tagging(Bucket=self.bucket, Tagging={"TagSet": tags})
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "creating bucket") from None

    def delete_bucket(self) -> int:
        """Erase every object version and delete marker, then the bucket itself (a throwaway bucket); the
        number of versions deleted. A bucket that is gone already counts as deleted."""
        if not self.bucket_exists():
            return 0
        for upload in list(self.uploads()):
            self.abort_upload(upload.key, upload.upload_id)
        erased = self.erase_prefix("")
        try:
            self.client.delete_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "deleting bucket") from None
        return erased

    def bucket_setting(self, name: str) -> dict[str, Any] | None:
        """One of the bucket's settings as S3 returns it (``versioning``, ``public_access_block``,
        ``encryption``, ``lifecycle``, ``object_lock``, ``tagging``); None when it was never set."""
        call, missing = _SETTINGS[name]
        try:
            return dict(getattr(self.client, f"get_{call}")(Bucket=self.bucket))
        except ClientError as exc:
            if _code(exc) in missing:
                return None
            raise self._fail(exc, f"reading the {name} setting of", None) from None
        except BotoCoreError as exc:
            raise self._fail(exc, f"reading the {name} setting of", None) from None

    def versioning(self) -> str | None:
        """The bucket's versioning status: "Enabled", "Suspended" or None (never turned on)."""
        status = (self.bucket_setting("versioning") or {}).get("Status")
        return str(status) if status else None

    def put_bucket_setting(self, name: str, value: dict[str, Any]) -> None:
        """Set one of the settings :meth:`bucket_setting` reads (the S3 call's own argument shape)."""
        call, _ = _SETTINGS[name]
        argument = _SETTING_ARGUMENTS[name]
        try:
            getattr(self.client, f"put_{call}")(Bucket=self.bucket, **{argument: value})
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, f"setting the {name} of", None) from None

    def multipart(
        self, key: str, *, part_size: int, max_part_size: int, concurrency: int, expected_size: int = 0,
        retain_until: datetime | None = None,
    ) -> MultipartUpload:
        return MultipartUpload(
            self, key, PartSizer(part_size, max_part_size, self.max_parts, expected_size), concurrency,
            self.lock_args(retain_until),
        )

    def iter_chunks(
        self, key: str, size: int, *, chunk_size: int, concurrency: int, start: int = 0,
        progress: Progress | None = None,
    ) -> Iterator[bytes]:
        """Yield the object's bytes from ``start`` on, in order, fetching up to ``concurrency`` ranges ahead.

        Each range is retried on its own (:meth:`transfer`); the read gives up when the region has moved
        no byte for the stall deadline.
        """
        if size <= start:
            return
        progress = progress or Progress()
        ranges = deque((at, min(at + chunk_size, size) - 1) for at in range(start, size, chunk_size))
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-get") as pool:
            inflight: deque[Future[bytes]] = deque()
            try:
                while ranges or inflight:
                    while ranges and len(inflight) < concurrency:
                        first, last = ranges.popleft()
                        inflight.append(pool.submit(self._get_range, key, first, last, progress))
                    yield inflight.popleft().result()
            finally:
                for pending in inflight:
                    pending.cancel()

    def get_data(self, key: str, size: int, progress: Progress | None = None) -> bytes:
        """Read a data object of ``size`` bytes (a chunk: megabytes, not gigabytes) in one request on the data
        path, as :meth:`put_data` writes one: the stall deadline and per-request retries of :meth:`transfer`.
        A shorter object is retried and then refused, as a range cut short is."""
        if size <= 0:
            return b""
        return self._get_range(key, 0, size - 1, progress or Progress())

    def _get_range(self, key: str, start: int, end: int, progress: Progress) -> bytes:
        def get() -> bytes:
            body = self.data_client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}")["Body"]
            try:
                data = bytes(body.read())
            finally:
                body.close()
            if len(data) != end - start + 1:  # a connection cut short: another attempt
                raise OSError(f"short read at byte {start}: {len(data)} of {end - start + 1} bytes")
            return data

        return self.transfer(get, progress, "reading", key)


# bucket setting -> (S3 call suffix, error codes that mean "never set")
_SETTINGS: dict[str, tuple[str, set[str]]] = {
    "versioning": ("bucket_versioning", set()),
    "public_access_block": ("public_access_block", {"NoSuchPublicAccessBlockConfiguration"}),
    "encryption": ("bucket_encryption", {"ServerSideEncryptionConfigurationNotFoundError"}),
    "lifecycle": ("bucket_lifecycle_configuration", {"NoSuchLifecycleConfiguration"}),
    "object_lock": ("object_lock_configuration", {"ObjectLockConfigurationNotFoundError"}),
    "tagging": ("bucket_tagging", {"NoSuchTagSet", "NoSuchTagSetError"}),
}
_SETTING_ARGUMENTS = {
    "versioning": "VersioningConfiguration", "public_access_block": "PublicAccessBlockConfiguration",
    "encryption": "ServerSideEncryptionConfiguration", "lifecycle": "LifecycleConfiguration",
    "object_lock": "ObjectLockConfiguration", "tagging": "Tagging",
}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PartSizer:
    """Chooses each part's size so an object of unknown length never exceeds ``max_parts``.

    Parts start at ``part_size`` and double, up to ``max_part_size``, every ``max_parts / 16`` parts: a
    small object keeps small parts (little memory) and a stream far larger than expected still fits. The
    starting size is raised (doubled) only while :meth:`capacity` is under twice ``expected_size``.
    """

    LEVELS = 16

    def __init__(self, part_size: int, max_part_size: int, max_parts: int, expected_size: int = 0) -> None:
        if not MIN_PART_SIZE <= part_size <= max_part_size <= MAX_PART_SIZE:
            raise ValueError("part sizes must satisfy 5MiB <= part_size <= max_part_size <= 5GiB")
        self.max_part_size = max_part_size
        self.max_parts = max_parts
        self.step = max(1, max_parts // self.LEVELS)
        self.initial = part_size
        while self.initial < max_part_size and self.capacity() < 2 * expected_size:
            self.initial = min(max_part_size, self.initial * 2)

    def size_for(self, part_number: int) -> int:
        """Size of part ``part_number`` (1-based)."""
        if part_number > self.max_parts:
            raise StorageError(
                f"object needs more than {self.max_parts} parts even at {self.max_part_size // MiB} MiB "
                "per part: raise transfer.max_part_size"
            )
        doublings = min((part_number - 1) // self.step, 64)
        return min(self.max_part_size, self.initial << doublings)

    def capacity(self) -> int:
        """The largest object (bytes) these settings can upload."""
        full = self.max_parts // self.step
        levels = sum(min(self.max_part_size, self.initial << d) * self.step for d in range(min(full, 64)))
        rest = self.max_parts - full * self.step
        return levels + rest * min(self.max_part_size, self.initial << min(full, 64))


class MultipartUpload:
    """A streaming multipart upload: ``write`` blocks when ``concurrency`` parts are in flight.

    Use as a context manager: an exception of any kind (including a SIGTERM turned into one) aborts the
    upload, so no partial object is ever completed.
    """

    def __init__(
        self, store: ObjectStore, key: str, sizer: PartSizer, concurrency: int, extra: dict[str, Any] | None = None
    ) -> None:
        self.extra = extra or {}
        self.store = store
        self.key = key
        self.sizer = sizer
        self.size = 0
        self._concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._buffer = bytearray()
        self._number = 0
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self.upload_id: str | None = None
        self._done = False
        self._error: Exception | None = None
        self.progress = Progress()

    def __enter__(self) -> MultipartUpload:
        try:
            self.upload_id = self.store.client.create_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, **self.extra
            )["UploadId"]
        except (ClientError, BotoCoreError) as exc:
            raise self.store._fail(exc, "starting upload of", self.key) from None
        self._pool = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="s3-put")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None or not self._done:
            self.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._buffer and type(data) is bytes and len(data) == self.sizer.size_for(self._number + 1):
            self._submit(data)  # a whole part as an immutable object: sent as is, no copy (shareable)
            return
        self._buffer += data
        while len(self._buffer) >= self.sizer.size_for(self._number + 1):
            size = self.sizer.size_for(self._number + 1)
            with memoryview(self._buffer) as view:
                chunk = bytes(view[:size])  # one copy, not two
            del self._buffer[:size]
            self._submit(chunk)

    def _submit(self, chunk: bytes) -> None:
        assert self._pool is not None
        self._slots.acquire()
        if self._error is not None:  # surface a failed part early instead of uploading the rest
            self._slots.release()
            raise self._error
        self._number += 1
        self.size += len(chunk)
        self._parts.append(self._pool.submit(self._upload_part, self._number, chunk))

    def _upload_part(self, number: int, chunk: bytes) -> dict[str, Any]:
        furthest = [0]

        def put() -> Any:
            return self.store.data_client.upload_part(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number,
                Body=_ProgressBody(chunk, self.progress, furthest),
            )

        try:
            if self._error is not None:  # another part gave up: the upload is lost, do not send more
                raise self._error
            response = self.store.transfer(put, self.progress, f"uploading part {number} of", self.key)
            return {"PartNumber": number, "ETag": response["ETag"]}
        except StorageError as exc:
            self._error = exc
            raise
        finally:
            self._slots.release()

    def complete(self) -> int:
        """Upload what is buffered and complete the object; returns its size in bytes."""
        if self._buffer or self._number == 0:
            self._submit(bytes(self._buffer))
            self._buffer.clear()
        parts = [f.result() for f in self._parts]

        def complete() -> None:  # assembling a large object takes a while: the data client's (stall) timeout
            try:
                self.store.data_client.complete_multipart_upload(
                    Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
                )
            except ClientError as exc:  # an earlier attempt completed it and its answer was lost
                info = self.store.head(self.key) if _code(exc) == "NoSuchUpload" else None
                if info is None or info.size != self.size:
                    raise

        self.store.transfer(complete, self.progress, "completing upload of", self.key)
        self._done = True
        self._shutdown()
        return self.size

    def abort(self) -> None:
        self._shutdown(cancel=True)
        if self.upload_id is None or self._done:
            return
        try:
            self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
            log.warning("aborted upload of s3://%s/%s", self.store.bucket, self.key)
        except (ClientError, BotoCoreError) as exc:  # the next run aborts it as stale
            log.error("could not abort upload of s3://%s/%s: %s", self.store.bucket, self.key, exc)
        self._done = True

    def _shutdown(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
