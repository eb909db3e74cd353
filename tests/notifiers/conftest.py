from __future__ import annotations

import pytest

from tests.notifiers import peers


@pytest.fixture
def receiver():
    found = peers.http_receiver()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture(scope="session")
def alertmanager_sink():
    """Where the session's Alertmanager sends its own notifications (its webhook receiver)."""
    found = peers.http_receiver()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory, alertmanager_sink):
    """One real Alertmanager for the session."""
    manager = peers.alertmanager(tmp_path_factory.mktemp("alertmanager"), alertmanager_sink.url + "/am")
    yield manager
    manager.stop()


@pytest.fixture
def certificate(tmp_path):
    """(directory holding smtp.crt and smtp.key, the certificate's PEM) for 127.0.0.1."""
    _, _, pem = peers.self_signed(tmp_path)
    return tmp_path, pem


@pytest.fixture
def smtp_servers():
    """Start SMTP servers with `smtp_servers(**options)`; all stopped at the end."""
    started = []

    def start(**options):
        server = peers.smtp_server(**options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.controller.stop()
