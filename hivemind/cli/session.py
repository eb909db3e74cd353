"""What a command runs against: the global options, the config file, and the client built from them."""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from hivemind.cli.client import ApiClient, check_server_url
from hivemind.cli.config import Config, Context, load_config
from hivemind.cli.errors import EXIT_AUTH, CliError, usage_error

DEFAULT_SERVER = "http://127.0.0.1:8000"
NO_TENANT = "no tenant: pass --tenant or run `hivemind context use <tenant>`"


@dataclass
class Session:
    """The global options as given; the config file is read only when a command needs it."""

    server_option: str | None = None
    token_option: str | None = None
    context_option: str | None = None
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config()
        return self._config

    def context(self) -> Context | None:
        """The context named by --context, else the current one (None before any login)."""
        if self.context_option:
            found = self.config.contexts.get(self.context_option)
            if found is None:
                known = ", ".join(sorted(self.config.contexts)) or "none"
                raise CliError(f"no context {self.context_option!r} in {self.config.path} (known: {known})")
            return found
        return self.config.current()

    def active_context(self) -> Context | None:
        """The context, unless --server points elsewhere: its token must not go to another server."""
        ctx = self.context()
        if ctx and self.server_option and check_server_url(self.server_option) != ctx.server:
            return None
        return ctx

    def server(self) -> str:
        if self.server_option:
            return check_server_url(self.server_option)
        ctx = self.context()
        return ctx.server if ctx else DEFAULT_SERVER

    def client(self, tenant: str | None = None) -> ApiClient:
        """A client with the token; `tenant` overrides the context's for X-Hivemind-Tenant."""
        ctx = self.active_context()
        token = self.token_option or (ctx.token if ctx else None)
        if not token:
            raise CliError(f"not logged in to {self.server()}: run `hivemind login --server URL`", EXIT_AUTH)
        return ApiClient(self.server(), token, tenant or (ctx.tenant if ctx else None))

    def tenant(self, explicit: str | None) -> str:
        """The tenant a tenant-scoped command acts on: --tenant, else the context's."""
        if explicit:
            return explicit
        ctx = self.active_context()
        if ctx and ctx.tenant:
            return ctx.tenant
        raise usage_error(NO_TENANT)


# Hands each command the Session the root group built.
pass_session = click.make_pass_decorator(Session, ensure=True)
