"""A backup location in an S3-compatible bucket (AWS, MinIO, Ceph radosgw, moto) under a prefix.

Create-only puts are conditional writes (PutObject If-None-Match: *): the server refuses the
second writer with 412, so a lock taken here holds against any other writer of the bucket.
Big puts go up in parts and appear only when the upload is completed: whole or not at all.

Without credentials requests go unsigned (a public bucket, a test peer); the machine's own
AWS credentials (environment, ~/.aws, instance role) are never used, because a location
belongs to a tenant and must not borrow the platform's identity.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import boto3
import botocore
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from .base import Conflict, NotFound, Store, StoreError, StoreUnavailable, check_key, redact

MULTIPART_THRESHOLD = 64 * 1024 * 1024  # one request up to here; parts of this size above
CONNECT_TIMEOUT = 5  # seconds: an unreachable endpoint fails in seconds, not minutes
READ_TIMEOUT = 60
ATTEMPTS = 3  # botocore's standard retry mode: throttling, 5xx and dropped connections
# No answer at all (refused, reset, timed out): the server may be back in a moment.
UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError)


_SESSION_LOCK = threading.Lock()
_SESSION: boto3.session.Session | None = None


def _session() -> boto3.session.Session:
    """One session for every store: it loads S3's service model once (a client of a session of
    its own costs 0.1-0.3 s). Credentials are given per client, never set on the session."""
    global _SESSION  # created on first use, under _SESSION_LOCK
    if _SESSION is None:
        _SESSION = boto3.session.Session()
    return _SESSION


class S3Store(Store):
    kind = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        addressing_style: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        attempts: int = ATTEMPTS,
        multipart_threshold: int = MULTIPART_THRESHOLD,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.addressing_style = addressing_style or ("path" if endpoint_url else "virtual")
        self._secrets = (access_key_id or "", secret_access_key or "")
        config = Config(
            region_name=region,
            s3={"addressing_style": self.addressing_style},
            retries={"mode": "standard", "max_attempts": attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=32,
            signature_version="s3v4" if access_key_id else botocore.UNSIGNED,
            ignore_configured_endpoint_urls=True,  # AWS_ENDPOINT_URL* of the machine is not ours
            # Checksums only where the API requires them: the default's streamed CRC trailers are
            # refused by several S3-compatible servers (older MinIO and radosgw). The repository
            # checks every object's content itself.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # Explicit keys (or unsigned requests): never the machine's credentials.
        with _SESSION_LOCK:
            self._client = _session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key_id or None,
                aws_secret_access_key=secret_access_key or None,
                config=config,
            )
        self.multipart_threshold = multipart_threshold
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_threshold, max_concurrency=4
        )

    def __repr__(self) -> str:
        return f"<S3Store {self.describe()}>"

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, what: str, exc: Exception, key: str | None = None) -> StoreError:
        """The StoreError (NotFound, Conflict) for a failed call, with the server's own answer."""
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(error.get("Code") or status or "?")
            message = error.get("Message") or ""
            answer = f"{code} {message}".strip() + (f" (HTTP {status})" if status else "")
            if key is not None and code in {"NoSuchKey", "404", "NotFound"}:
                return NotFound(f"{self.describe()}: no object {key}")
            if key is not None and code in {"PreconditionFailed", "412"}:
                return Conflict(f"{self.describe()}: {key} exists")
        else:
            answer = str(exc) or type(exc).__name__
        failure = StoreUnavailable if isinstance(exc, UNREACHABLE) else StoreError
        return failure(redact(f"{self.describe()}: {what} failed: {answer}", self._secrets))

    def put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        name = self._key(key)
        try:
            if create_only:
                # One request even when big: a multipart upload's condition is checked only at
                # completion, and locks are small.
                self._client.put_object(Bucket=self.bucket, Key=name, Body=data, IfNoneMatch="*")
            elif len(data) <= self.multipart_threshold:
                self._client.put_object(Bucket=self.bucket, Key=name, Body=data)
            else:
                # Parts are invisible until completed; a failure aborts the upload.
                self._client.upload_fileobj(io.BytesIO(data), self.bucket, name, Config=self._transfer)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"writing {key}", exc, key if create_only else None) from None
        except S3UploadFailedError as exc:
            raise self._fail(f"writing {key}", exc) from None

    def get(self, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"reading {key}", exc, key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"not a range: offset {offset}, length {length}")
        if length == 0:
            self.size(key)  # NotFound still applies
            return b""
        try:
            response = self._client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={offset}-{offset + length - 1}"
            )
            return response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                self.size(key)  # past the end of an existing object: nothing there
                return b""
            raise self._fail(f"reading {key}", exc, key) from None
        except BotoCoreError as exc:
            raise self._fail(f"reading {key}", exc, key) from None

    def size(self, key: str) -> int:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"reading {key}", exc, key) from None

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            # S3 lists in UTF-8 byte order, which is key order for our ASCII keys.
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    yield item["Key"][len(base) :], item["Size"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"listing {prefix or 'objects'}", exc) from None

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            error = self._fail(f"deleting {key}", exc, key)
            if not isinstance(error, NotFound):
                raise error from None
