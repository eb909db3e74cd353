"""A backup location in a Google Cloud Storage bucket (or an emulator, by endpoint) under a prefix.

Authentication is a service account's JSON key; without one requests are anonymous, which
registry.validate allows only with an endpoint override (an emulator), never against Google.
Create-only puts are conditional on generation 0 (the object must not exist): the second
writer gets 412. Uploads become visible only when finalized: whole or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from google.api_core import exceptions as api
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import GoogleAuthError
from google.cloud import storage
from google.cloud.storage.retry import _should_retry
from google.oauth2 import service_account
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import RequestException, Timeout

from .base import Conflict, NotFound, Store, StoreError, StoreUnavailable, check_key, redact

CONNECT_TIMEOUT = 5  # seconds: an unreachable endpoint fails in seconds, not minutes
READ_TIMEOUT = 60
RETRY_DEADLINE = 5  # seconds of retrying a call (the library's default is 120)
SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
FAILURES = (api.GoogleAPIError, GoogleAuthError, RequestException)


class GCSStore(Store):
    kind = "gcs"

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint: str | None = None,
        project: str | None = None,
        service_account_json: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        retry_deadline: float = RETRY_DEADLINE,
        chunk_size: int | None = None,
    ):
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self._secrets: tuple[str, ...] = ()
        if service_account_json:
            info = json.loads(service_account_json)
            self._secrets = (info.get("private_key", ""), info.get("private_key_id", ""))
            self._secrets = tuple(s for s in self._secrets if s)
            credentials = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
            project = project or info.get("project_id")
        else:
            credentials = AnonymousCredentials()
        options = {"api_endpoint": self.endpoint} if self.endpoint else None
        client = storage.Client(project=project or "<none>", credentials=credentials, client_options=options)
        self._bucket = client.bucket(bucket)
        self._client = client
        self._timeout = (connect_timeout, read_timeout)
        # None: one request up to 8 MiB, a resumable upload in one chunk above; else chunks of
        # this size (a multiple of 256 KiB).
        self.chunk_size = chunk_size
        self._retry = Retry(predicate=_should_retry, initial=0.25, maximum=2.0, multiplier=2.0, timeout=retry_deadline)

    def __repr__(self) -> str:
        return f"<GCSStore {self.describe()}>"

    def describe(self) -> str:
        where = f"gs://{self.bucket_name}/{self.prefix}" if self.prefix else f"gs://{self.bucket_name}"
        return f"{where} at {self.endpoint}" if self.endpoint else where

    def _blob(self, key: str) -> storage.Blob:
        check_key(key)
        return self._bucket.blob(f"{self.prefix}/{key}" if self.prefix else key, chunk_size=self.chunk_size)

    def _fail(self, what: str, exc: Exception) -> StoreError:
        if isinstance(exc, api.RetryError) and exc.cause is not None:
            exc = exc.cause  # the last attempt's own error, not "deadline exceeded"
        if isinstance(exc, api.GoogleAPICallError):
            answer = f"{_server_answer(exc)} (HTTP {exc.code})"
        else:
            answer = str(exc) or type(exc).__name__
        # No answer at all (refused, reset, timed out): the server may be back in a moment.
        failure = StoreUnavailable if isinstance(exc, RequestsConnectionError | Timeout) else StoreError
        return failure(redact(f"{self.describe()}: {what} failed: {answer}", self._secrets))

    def put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        blob = self._blob(key)
        try:
            blob.upload_from_string(
                data,
                content_type="application/octet-stream",
                if_generation_match=0 if create_only else None,
                timeout=self._timeout,
                retry=self._retry,
            )
        except api.PreconditionFailed as exc:
            if create_only:
                raise Conflict(f"{self.describe()}: {key} exists") from None
            raise self._fail(f"writing {key}", exc) from None
        except FAILURES as exc:
            raise self._fail(f"writing {key}", exc) from None

    def get(self, key: str) -> bytes:
        try:
            return self._blob(key).download_as_bytes(timeout=self._timeout, retry=self._retry)
        except api.NotFound:
            raise NotFound(f"{self.describe()}: no object {key}") from None
        except FAILURES as exc:
            raise self._fail(f"reading {key}", exc) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"not a range: offset {offset}, length {length}")
        if length == 0:
            self.size(key)  # NotFound still applies
            return b""
        try:
            return self._blob(key).download_as_bytes(
                start=offset, end=offset + length - 1, timeout=self._timeout, retry=self._retry
            )
        except api.NotFound:
            raise NotFound(f"{self.describe()}: no object {key}") from None
        except api.RequestRangeNotSatisfiable:
            self.size(key)  # past the end of an existing object: nothing there
            return b""
        except FAILURES as exc:
            raise self._fail(f"reading {key}", exc) from None

    def size(self, key: str) -> int:
        name = self._blob(key).name
        try:
            blob = self._bucket.get_blob(name, timeout=self._timeout, retry=self._retry)
        except FAILURES as exc:
            raise self._fail(f"reading {key}", exc) from None
        if blob is None:
            raise NotFound(f"{self.describe()}: no object {key}")
        return blob.size

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            # GCS lists in UTF-8 byte order, which is key order for our ASCII keys.
            for blob in self._client.list_blobs(
                self._bucket, prefix=base + prefix, timeout=self._timeout, retry=self._retry
            ):
                yield blob.name[len(base) :], blob.size
        except FAILURES as exc:
            raise self._fail(f"listing {prefix or 'objects'}", exc) from None

    def delete(self, key: str) -> None:
        try:
            self._blob(key).delete(timeout=self._timeout, retry=self._retry)
        except api.NotFound:
            pass
        except FAILURES as exc:
            raise self._fail(f"deleting {key}", exc) from None


def _server_answer(exc: api.GoogleAPICallError) -> str:
    """The server's reason and message from its JSON error body; the library's own message
    (which may repeat the URL and the body) only when there is no body."""
    try:
        error = exc.response.json()["error"]
        reasons = [e["reason"] for e in error.get("errors", []) if e.get("reason")]
        message = str(error.get("message") or "")
    except (AttributeError, KeyError, TypeError, ValueError):
        return (exc.message or type(exc).__name__).splitlines()[0]
    return f"{reasons[0]}: {message}" if reasons and reasons[0] != message else message
