"""The kinds of backup location: what each one's configuration and secrets are, checked where
they enter (the API, the CLI, a restore's location document), and how to open one.

    validate(kind, config, secrets) -> (config, secrets)   cleaned; StoreConfigError names the field
    open_store(kind, config, secrets) -> Store

`config` is what may be shown (path, bucket, endpoint, prefix, region); `secrets` what never is
(access keys, account keys, service-account JSON): the caller seals them at rest. No message
here quotes a secret's value. The cloud kinds' modules are imported when a store is opened, so
validating a location does not load three SDKs.

    local  config path                                    secrets -
    s3     config bucket, prefix, endpoint_url, region,   secrets access_key_id + secret_access_key
                  addressing_style (path | virtual)               (both, or neither: unsigned)
    azure  config account_url, container, prefix          secrets account_key or sas_token (one)
    gcs    config bucket, prefix, endpoint, project       secrets service_account_json (absent:
                                                                  anonymous, emulator endpoint only)
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from .base import Store
from .local import LocalStore


class StoreConfigError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _only(kind: str, given: dict, allowed: set[str], what: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise StoreConfigError(what, f"{kind} locations take no {', '.join(unknown)} (known: {known})")


def _validate_local(config: dict, secrets: dict) -> tuple[dict, dict]:
    _only("local", config, {"path"}, "config")
    _only("local", secrets, set(), "secrets")
    path = config.get("path")
    if not isinstance(path, str) or not path.strip():
        raise StoreConfigError("path", "a local location needs an absolute directory path")
    if not path.startswith("/") or ".." in PurePosixPath(path).parts or "\x00" in path or len(path) > 1024:
        raise StoreConfigError("path", f"must be an absolute path without '..' (got {path!r})")
    return {"path": str(PurePosixPath(path))}, {}


# -- shared field checks ---------------------------------------------------------------------

PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
PRINTABLE = re.compile(r"[\x21-\x7e]+")  # visible ASCII, no spaces


def _text(config: dict, field: str, *, required: bool, what: str) -> str | None:
    value = config.get(field)
    if value is None or value == "":
        if required:
            raise StoreConfigError(field, f"required: {what}")
        return None
    if not isinstance(value, str):
        raise StoreConfigError(field, f"must be a string: {what}")
    return value


def _url(config: dict, field: str, *, required: bool, what: str) -> str | None:
    value = _text(config, field, required=required, what=what)
    if value is None:
        return None
    if len(value) > 2048 or not PRINTABLE.fullmatch(value):
        raise StoreConfigError(field, f"must be an http:// or https:// URL without spaces (got {value[:200]!r})")
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise StoreConfigError(field, f"the port is not a number 1-65535 (got {value!r})") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise StoreConfigError(field, f"must be an http:// or https:// URL with a host (got {value!r})")
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL would be shown wherever the location is: they belong in secrets.
        raise StoreConfigError(field, "must not carry credentials (user:password@): give them as secrets")
    if parts.query or parts.fragment:
        raise StoreConfigError(field, "must not have a query or fragment (a token belongs in secrets)")
    if port == 0:
        raise StoreConfigError(field, f"the port must be 1-65535 (got {value!r})")
    return value.rstrip("/")


def _prefix(config: dict) -> str:
    value = _text(config, "prefix", required=False, what="a key prefix")
    if value is None:
        return ""
    prefix = value.strip("/")
    segments = prefix.split("/")
    if len(prefix) > 512 or not all(PREFIX_SEGMENT.fullmatch(s) and s not in {".", ".."} for s in segments):
        raise StoreConfigError(
            "prefix", f"must be '/'-separated segments of letters, digits, '.', '_', '-', no '..' (got {value!r})"
        )
    return prefix


def _secret(secrets: dict, field: str, what: str, *, limit: int = 4096) -> str | None:
    """A secret string, checked without ever quoting it."""
    value = secrets.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise StoreConfigError(field, f"must be a string: {what}")
    if len(value) > limit or not PRINTABLE.fullmatch(value):
        raise StoreConfigError(field, f"must be {what}: visible ASCII characters without spaces, at most {limit}")
    return value


# -- s3 ----------------------------------------------------------------------------------------

S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def _validate_s3(config: dict, secrets: dict) -> tuple[dict, dict]:
    _only("s3", config, {"endpoint_url", "bucket", "prefix", "region", "addressing_style"}, "config")
    _only("s3", secrets, {"access_key_id", "secret_access_key"}, "secrets")
    endpoint_url = _url(config, "endpoint_url", required=False, what="the S3 endpoint, e.g. https://s3.example.com")
    bucket = _text(config, "bucket", required=True, what="the bucket's name")
    if (
        not S3_BUCKET.fullmatch(bucket)
        or ".." in bucket
        or ".-" in bucket
        or "-." in bucket
        or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket)
    ):
        raise StoreConfigError(
            "bucket",
            "an S3 bucket name is 3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter "
            f"or digit, not like an IP address (got {bucket!r})",
        )
    region = _text(config, "region", required=False, what="the region, e.g. us-east-1") or "us-east-1"
    if not REGION.fullmatch(region):
        raise StoreConfigError("region", f"lowercase letters, digits and '-', e.g. eu-west-1 (got {region!r})")
    style = _text(config, "addressing_style", required=False, what="'path' or 'virtual'")
    if style is None:
        style = "path" if endpoint_url else "virtual"
    if style not in {"path", "virtual"}:
        raise StoreConfigError("addressing_style", f"must be 'path' or 'virtual' (got {style!r})")
    if style == "virtual" and "." in bucket and (endpoint_url or "https").startswith("https"):
        # A dotted bucket as a host name breaks the TLS certificate's wildcard.
        raise StoreConfigError("addressing_style", "a bucket name with '.' needs 'path' addressing over https")
    access_key_id = _secret(secrets, "access_key_id", "the access key id", limit=256)
    secret_access_key = _secret(secrets, "secret_access_key", "the secret access key", limit=1024)
    if bool(access_key_id) != bool(secret_access_key):
        missing = "secret_access_key" if access_key_id else "access_key_id"
        raise StoreConfigError(missing, "give both access_key_id and secret_access_key, or neither (unsigned requests)")
    cleaned = {"bucket": bucket, "prefix": _prefix(config), "region": region, "addressing_style": style}
    if endpoint_url:
        cleaned["endpoint_url"] = endpoint_url
    keys = {"access_key_id": access_key_id, "secret_access_key": secret_access_key} if access_key_id else {}
    return cleaned, keys


def _open_s3(config: dict, secrets: dict) -> Store:
    from .s3 import S3Store

    return S3Store(**config, **secrets)


# -- azure -------------------------------------------------------------------------------------

AZURE_CONTAINER = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
AZURE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def azure_account_name(account_url: str) -> str:
    """The account's name: the emulator's first path segment, else the host's first label."""
    parts = urlsplit(account_url)
    path = parts.path.strip("/")
    return path.split("/")[0] if path else (parts.hostname or "").split(".")[0]


def _validate_azure(config: dict, secrets: dict) -> tuple[dict, dict]:
    _only("azure", config, {"account_url", "container", "prefix"}, "config")
    _only("azure", secrets, {"account_key", "sas_token"}, "secrets")
    what = "the account's blob endpoint: https://ACCOUNT.blob.core.windows.net, or http://HOST:PORT/ACCOUNT (emulator)"
    account_url = _url(config, "account_url", required=True, what=what)
    path = urlsplit(account_url).path.strip("/")
    if "/" in path:
        raise StoreConfigError("account_url", f"the path may only name the account (got {account_url!r}): {what}")
    if not AZURE_ACCOUNT.fullmatch(azure_account_name(account_url)):
        raise StoreConfigError(
            "account_url", f"no account name of 3-24 lowercase letters and digits in {account_url!r}: {what}"
        )
    container = _text(config, "container", required=True, what="the container's name")
    if not AZURE_CONTAINER.fullmatch(container):
        raise StoreConfigError(
            "container",
            "a container name is 3-63 lowercase letters, digits and single '-', starting and ending with a letter "
            f"or digit (got {container!r})",
        )
    account_key = _secret(secrets, "account_key", "the account's base64 shared key", limit=256)
    sas_token = _secret(secrets, "sas_token", "a SAS token (the query string with sv=...&sig=...)")
    if bool(account_key) == bool(sas_token):
        raise StoreConfigError("secrets", "give exactly one of account_key (shared key) or sas_token")
    if account_key and not BASE64.fullmatch(account_key):
        raise StoreConfigError("account_key", "must be the account's base64 key as the portal shows it")
    if sas_token and "sig=" not in sas_token:
        raise StoreConfigError("sas_token", "must be a SAS token: a query string holding sig=...")
    cleaned = {"account_url": account_url, "container": container, "prefix": _prefix(config)}
    return cleaned, ({"account_key": account_key} if account_key else {"sas_token": sas_token.lstrip("?")})


def _open_azure(config: dict, secrets: dict) -> Store:
    from .azure import AzureStore

    return AzureStore(**config, **secrets)


# -- gcs ---------------------------------------------------------------------------------------

GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
GCP_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")


def _validate_gcs(config: dict, secrets: dict) -> tuple[dict, dict]:
    _only("gcs", config, {"bucket", "prefix", "endpoint", "project"}, "config")
    _only("gcs", secrets, {"service_account_json"}, "secrets")
    bucket = _text(config, "bucket", required=True, what="the bucket's name")
    if (
        not GCS_BUCKET.fullmatch(bucket)
        or any(len(part) > 63 or not part for part in bucket.split("."))
        or ("." not in bucket and len(bucket) > 63)
        or bucket.startswith("goog")
    ):
        raise StoreConfigError(
            "bucket",
            "a GCS bucket name is 3-63 lowercase letters, digits, '-', '_' and '.', starting and ending with a "
            f"letter or digit, not starting with 'goog' (got {bucket!r})",
        )
    endpoint = _url(config, "endpoint", required=False, what="an endpoint override, e.g. http://127.0.0.1:4443")
    project = _text(config, "project", required=False, what="the project id")
    if project is not None and not GCP_PROJECT.fullmatch(project):
        raise StoreConfigError("project", f"a project id is 6-30 lowercase letters, digits and '-' (got {project!r})")
    cleaned = {"bucket": bucket, "prefix": _prefix(config)}
    if endpoint:
        cleaned["endpoint"] = endpoint
    if project:
        cleaned["project"] = project
    account = secrets.get("service_account_json")
    if account is None or account == "":
        if not endpoint:
            raise StoreConfigError(
                "service_account_json",
                "required: anonymous requests are only for an emulator given as endpoint, never Google's servers",
            )
        return cleaned, {}
    if isinstance(account, dict):
        account = json.dumps(account)
    if not isinstance(account, str) or len(account) > 16384:
        raise StoreConfigError("service_account_json", "must be a service account's JSON key (at most 16 KiB)")
    try:
        info = json.loads(account)
    except ValueError:
        raise StoreConfigError("service_account_json", "is not JSON: give the key file a service account has") from None
    needed = ("type", "client_email", "private_key", "token_uri")
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise StoreConfigError("service_account_json", 'must be a service account key ("type": "service_account")')
    missing = [f for f in needed if not isinstance(info.get(f), str) or not info.get(f)]
    if missing:
        raise StoreConfigError("service_account_json", f"the key lacks {', '.join(missing)}")
    if "PRIVATE KEY" not in info["private_key"]:
        raise StoreConfigError("service_account_json", "its private_key is not a PEM private key")
    return cleaned, {"service_account_json": account}


def _open_gcs(config: dict, secrets: dict) -> Store:
    from .gcs import GCSStore

    return GCSStore(**config, **secrets)


VALIDATORS = {"local": _validate_local, "s3": _validate_s3, "azure": _validate_azure, "gcs": _validate_gcs}
OPENERS = {
    "local": lambda config, secrets: LocalStore(config["path"]),
    "s3": _open_s3,
    "azure": _open_azure,
    "gcs": _open_gcs,
}
KINDS = tuple(VALIDATORS)


def validate(kind: str, config: dict | None, secrets: dict | None) -> tuple[dict, dict]:
    if kind not in VALIDATORS:
        raise StoreConfigError("kind", f"unknown location kind {kind!r} (known: {', '.join(KINDS)})")
    config = {} if config is None else config
    secrets = {} if secrets is None else secrets
    if not isinstance(config, dict):
        raise StoreConfigError("config", "must be an object")
    if not isinstance(secrets, dict):
        raise StoreConfigError("secrets", "must be an object")
    return VALIDATORS[kind](config, secrets)


def open_store(kind: str, config: dict, secrets: dict) -> Store:
    config, secrets = validate(kind, config, secrets)
    return OPENERS[kind](config, secrets)
