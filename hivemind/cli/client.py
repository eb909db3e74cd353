"""The REST API as the CLI sees it: requests in, Python objects or an ApiError out."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from hivemind import __version__
from hivemind.cli.errors import EXIT_CONNECTION, ApiError, CliError, usage_error

TIMEOUT_SECONDS = 30
TENANT_HEADER = "X-Hivemind-Tenant"
API_ROOT = "/api/v1/"


def api_path(resource: str, key: int | str | None = None, action: str = "") -> str:
    """`/api/v1/apps/`, `/api/v1/apps/12/`, `/api/v1/apps/12/scale/`: every URL the CLI asks for."""
    path = f"{API_ROOT}{resource}/"
    if key is not None:
        path += f"{quote(str(key), safe='')}/"  # a name with `/` or `?` stays one path segment
    return path + (f"{action}/" if action else "")


def check_server_url(server: str) -> str:
    parts = urlsplit(server.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise usage_error(f"--server: expected a URL starting with http:// or https://, got {server!r}")
    return server.strip().rstrip("/")


def server_host(server: str) -> str:
    """The host (with its port, when the URL names one): the default context name."""
    parts = urlsplit(server)
    host = parts.hostname or server
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def _messages(value: Any) -> list[str]:
    if isinstance(value, list):
        return [m for item in value for m in _messages(item)]
    if isinstance(value, dict):
        return [f"{key}: {m}" for key, item in value.items() for m in _messages(item)]
    return [str(value)]


def error_message(body: Any) -> str | None:
    """`detail` when the API gave one, else every field error as `field: message`."""
    if isinstance(body, dict):
        if "detail" in body:
            return "; ".join(_messages(body["detail"]))
        parts = []
        for key, value in body.items():
            if key == "code":
                continue
            texts = _messages(value)
            if key in ("non_field_errors", "__all__"):
                parts.extend(texts)
            else:
                parts.extend(f"{key}: {text}" for text in texts)
        return "; ".join(parts) or None
    if isinstance(body, list) and body:
        return "; ".join(_messages(body))
    return None


class ApiClient:
    """One server, one token, and the tenant sent as X-Hivemind-Tenant (when there is one)."""

    def __init__(self, server: str, token: str | None, tenant: str | None = None) -> None:
        self.server = server.rstrip("/")
        self.tenant = tenant
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"hivemind-cli/{__version__}"
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def url(self, path: str) -> str:
        return f"{self.server}/{path.lstrip('/')}"

    def _same_origin(self, url: str) -> str:
        # `next` links carry the host the server believes it has (wrong behind a proxy);
        # following them as-is could also send the token to another origin.
        base, link = urlsplit(self.server), urlsplit(url)
        if (link.scheme, link.netloc) == (base.scheme, base.netloc):
            return url
        return urlunsplit((base.scheme, base.netloc, link.path, link.query, ""))

    def request(self, method: str, path: str, *, params: dict | None = None, json: Any = None) -> Any:
        url = path if path.startswith(("http://", "https://")) else self.url(path)
        headers = {TENANT_HEADER: self.tenant} if self.tenant else {}
        try:
            response = self.session.request(
                method, url, params=params, json=json, headers=headers, timeout=TIMEOUT_SECONDS
            )
        except requests.exceptions.SSLError as exc:
            raise CliError(f"TLS error talking to {self.server}: {exc}", EXIT_CONNECTION) from exc
        except requests.ConnectionError as exc:
            raise CliError(
                f"cannot connect to {self.server} (is the platform running and the URL right?)", EXIT_CONNECTION
            ) from exc
        except requests.Timeout as exc:
            raise CliError(f"{self.server} did not answer within {TIMEOUT_SECONDS}s", EXIT_CONNECTION) from exc
        except requests.RequestException as exc:
            raise CliError(f"{method} {url}: {exc}") from exc
        return self._decode(method, response)

    def _decode(self, method: str, response: requests.Response) -> Any:
        body: Any = None
        if response.content:
            try:
                body = response.json()
            except ValueError:
                body = None
                if response.ok:
                    kind = response.headers.get("Content-Type", "no content type")
                    raise CliError(
                        f"{method} {response.url} answered HTTP {response.status_code} with {kind}, not JSON "
                        "(is the server a Hivemind API?)"
                    ) from None
        if response.ok:
            return body
        path = urlsplit(response.url).path
        message = error_message(body) or f"{method} {path}: HTTP {response.status_code} {response.reason}"
        raise ApiError(message, response.status_code)

    def get(self, path: str, params: dict | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None) -> Any:
        return self.request("POST", path, json=json)

    def delete(self, path: str, params: dict | None = None) -> Any:
        return self.request("DELETE", path, params=params)

    def list_all(self, path: str, params: dict | None = None) -> list[Any]:
        """Every object of a paginated list, following `next` to the end."""
        page = self.get(path, params)
        if isinstance(page, list):  # an unpaginated endpoint
            return page
        items = list(page.get("results", []))
        while page.get("next"):
            page = self.get(self._same_origin(page["next"]))
            items.extend(page.get("results", []))
        return items
