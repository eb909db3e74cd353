"""A backup location in an Azure Blob Storage container (or Azurite, the emulator) under a prefix.

The account is one URL: https://ACCOUNT.blob.core.windows.net for Azure, or the emulator's
path-style http://HOST:PORT/ACCOUNT. Authentication is the account's shared key or a SAS token.
Create-only puts are conditional (If-None-Match: *, 409 BlobAlreadyExists for the second
writer); big puts are staged as blocks and appear only when the block list is committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, quote

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ExponentialRetry

from .base import Conflict, NotFound, Store, StoreError, StoreUnavailable, check_key, redact
from .registry import azure_account_name

CONNECT_TIMEOUT = 5  # seconds: an unreachable account fails in seconds, not minutes
READ_TIMEOUT = 60
SINGLE_PUT_SIZE = 64 * 1024 * 1024  # one request up to here; staged blocks above
BLOCK_SIZE = 8 * 1024 * 1024
RETRIES = 2  # after the first attempt; the SDK's default waits 15 s before the first retry


class AzureStore(Store):
    kind = "azure"

    def __init__(
        self,
        *,
        account_url: str,
        container: str,
        prefix: str = "",
        account_key: str | None = None,
        sas_token: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        retries: int = RETRIES,
        single_put_size: int = SINGLE_PUT_SIZE,
        block_size: int = BLOCK_SIZE,
    ):
        self.account_url = account_url.rstrip("/")
        self.container = container
        self.prefix = prefix.strip("/")
        self._secrets = tuple(s for s in (account_key, sas_token) if s) + _sas_signature(sas_token)
        if account_key:
            credential = {"account_name": azure_account_name(self.account_url), "account_key": account_key}
        else:
            credential = sas_token.lstrip("?") if sas_token else None
        service = BlobServiceClient(
            self.account_url,
            credential=credential,
            connection_timeout=connect_timeout,
            read_timeout=read_timeout,
            retry_policy=ExponentialRetry(
                initial_backoff=0.5, increment_base=1.5, retry_total=retries, random_jitter_range=0.5
            ),
            max_single_put_size=single_put_size,
            max_block_size=block_size,
        )
        self._container = service.get_container_client(container)

    def __repr__(self) -> str:
        return f"<AzureStore {self.describe()}>"

    def describe(self) -> str:
        where = f"{self.container}/{self.prefix}" if self.prefix else self.container
        return f"azure:{self.account_url}/{where}"

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, what: str, exc: AzureError) -> StoreError:
        if isinstance(exc, HttpResponseError):
            # The first line is the server's message; the rest repeats headers and the body.
            message = (exc.message or exc.reason or "").splitlines()[0] if (exc.message or exc.reason) else ""
            code = _code(exc)
            answer = f"{code} {message}".strip() + f" (HTTP {exc.status_code})"
        else:
            answer = str(exc.message if getattr(exc, "message", None) else exc) or type(exc).__name__
        # No answer at all (refused, reset, timed out): the server may be back in a moment.
        failure = StoreUnavailable if isinstance(exc, ServiceRequestError | ServiceResponseError) else StoreError
        return failure(redact(f"{self.describe()}: {what} failed: {answer}", self._secrets))

    def _missing(self, key: str, exc: ResourceNotFoundError) -> StoreError:
        """NotFound for an absent blob; a missing container is the location's failure."""
        if _code(exc) in {"BlobNotFound", ""}:
            return NotFound(f"{self.describe()}: no object {key}")
        return self._fail(f"reading {key}", exc)

    def put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        try:
            self._container.upload_blob(self._name(key), data, overwrite=not create_only, length=len(data))
        except ResourceExistsError as exc:
            if create_only and _code(exc) == "BlobAlreadyExists":
                raise Conflict(f"{self.describe()}: {key} exists") from None
            raise self._fail(f"writing {key}", exc) from None
        except AzureError as exc:
            raise self._fail(f"writing {key}", exc) from None

    def get(self, key: str) -> bytes:
        try:
            return self._container.download_blob(self._name(key)).readall()
        except ResourceNotFoundError as exc:
            raise self._missing(key, exc) from None
        except AzureError as exc:
            raise self._fail(f"reading {key}", exc) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"not a range: offset {offset}, length {length}")
        if length == 0:
            self.size(key)  # NotFound still applies
            return b""
        try:
            return self._container.download_blob(self._name(key), offset=offset, length=length).readall()
        except ResourceNotFoundError as exc:
            raise self._missing(key, exc) from None
        except HttpResponseError as exc:
            if exc.status_code == 416:  # past the end of an existing object: nothing there
                self.size(key)
                return b""
            raise self._fail(f"reading {key}", exc) from None
        except AzureError as exc:
            raise self._fail(f"reading {key}", exc) from None

    def size(self, key: str) -> int:
        try:
            return self._container.get_blob_client(self._name(key)).get_blob_properties().size
        except ResourceNotFoundError as exc:
            raise self._missing(key, exc) from None
        except AzureError as exc:
            raise self._fail(f"reading {key}", exc) from None

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            # Blob Storage lists in UTF-8 byte order, which is key order for our ASCII keys.
            for blob in self._container.list_blobs(name_starts_with=base + prefix):
                yield blob.name[len(base) :], blob.size
        except AzureError as exc:
            raise self._fail(f"listing {prefix or 'objects'}", exc) from None

    def delete(self, key: str) -> None:
        try:
            self._container.delete_blob(self._name(key))
        except ResourceNotFoundError as exc:
            if _code(exc) not in {"BlobNotFound", ""}:
                raise self._fail(f"deleting {key}", exc) from None
        except AzureError as exc:
            raise self._fail(f"deleting {key}", exc) from None


def _code(exc: HttpResponseError) -> str:
    """The server's error code as it sent it (the SDK may hand it over as an enum member)."""
    code = exc.error_code
    return str(getattr(code, "value", code) or "")


def _sas_signature(sas_token: str | None) -> tuple[str, ...]:
    """The token's signature alone, which a server or an SDK may quote url-encoded or not."""
    if not sas_token:
        return ()
    signatures = parse_qs(sas_token.lstrip("?")).get("sig", [])
    return tuple(signatures) + tuple(quote(s, safe="") for s in signatures)
