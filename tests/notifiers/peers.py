"""Real protocol peers the notifier tests deliver to: an HTTP receiver (webhook and Slack-style),
an SMTP server (aiosmtpd: plain, STARTTLS, implicit TLS, with a login) and a real Prometheus
Alertmanager (Debian's prometheus-alertmanager) on free ports."""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


# --- HTTP -----------------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Records every POST; answers `status` with `answer` (set them to make it refuse)."""

    url: str = ""
    status: int = 200
    answer: bytes = b"ok"
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def wait(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} requests of {count} arrived"
            time.sleep(0.05)
        return self.received


def http_receiver() -> HttpReceiver:
    receiver = HttpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            receiver.received.append(Received(self.path, dict(self.headers.items()), body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", str(len(receiver.answer)))
            self.end_headers()
            self.wfile.write(receiver.answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    receiver.server = server
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    return receiver


# --- SMTP -----------------------------------------------------------------------------------------


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, str]:
    """A self-signed certificate for `host` made now: (cert file, key file, cert PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hivemind-test-smtp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_file, key_file = directory / "smtp.crt", directory / "smtp.key"
    cert_file.write_text(pem)
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file, pem


class Mailbox:
    """aiosmtpd's handler: keeps every message it is given, with the session's TLS state."""

    def __init__(self):
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append({
            "from": envelope.mail_from, "to": list(envelope.rcpt_tos),
            "message": message_from_bytes(envelope.content),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "login": session.authenticated,
        })  # fmt: skip
        return "250 OK stored"

    def wait(self, count: int, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} messages of {count} arrived"
            time.sleep(0.05)
        return self.messages


def _authenticator(username: str, password: str):
    def check(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            username.encode(), password.encode(),
        )  # fmt: skip
        return AuthResult(success=ok, handled=False)

    return check


@dataclass
class SmtpServer:
    host: str
    port: int
    mailbox: Mailbox
    controller: Controller


def smtp_server(*, starttls: Path | None = None, implicit: Path | None = None, login=None) -> SmtpServer:
    """An SMTP server on a free port: plain; with `starttls` (a directory holding smtp.crt/key)
    it requires STARTTLS; with `implicit`, TLS from the first byte; with `login` (user, password)
    it requires that login."""
    mailbox = Mailbox()
    kwargs: dict = {}
    context = None
    for directory in (starttls, implicit):
        if directory is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(directory / "smtp.crt", directory / "smtp.key")
    if starttls is not None:
        kwargs.update(tls_context=context, require_starttls=True)
    if implicit is not None:
        kwargs.update(ssl_context=context)
    if login is not None:
        kwargs.update(authenticator=_authenticator(*login), auth_required=True, auth_require_tls=starttls is not None)
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, ready_timeout=10, **kwargs)
    controller.start()
    return SmtpServer("127.0.0.1", port, mailbox, controller)


# --- Alertmanager ---------------------------------------------------------------------------------


@dataclass
class Alertmanager:
    url: str
    process: subprocess.Popen
    log: Path
    login: tuple[str, str] | None = None

    def alerts(self, **labels) -> list[dict]:
        """GET /api/v2/alerts (active, silenced, inhibited and unprocessed), those with `labels`."""
        params = {"active": "true", "unprocessed": "true"}
        answer = requests.get(f"{self.url}/api/v2/alerts", params=params, timeout=5, auth=self.login)
        answer.raise_for_status()
        return [a for a in answer.json() if all(a["labels"].get(k) == v for k, v in labels.items())]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


ALERTMANAGER_CONFIG = """\
route:
  receiver: sink
  group_by: [alertname, tenant]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sink
    webhook_configs:
      - url: {sink}
        send_resolved: true
"""


def alertmanager(directory: Path, sink: str, *, login: tuple[str, str] | None = None) -> Alertmanager:
    """Debian's Alertmanager on a free port, with a config and storage of its own, clustering off;
    it notifies `sink` (an HTTP receiver) of what fires and resolves, as its own webhook receiver.
    With `login` (user, password) its API requires that basic authentication (--web.config.file)."""
    assert shutil.which(ALERTMANAGER), f"{ALERTMANAGER} is missing: apt-get install prometheus-alertmanager"
    (directory / "data").mkdir(parents=True, exist_ok=True)
    config = directory / "alertmanager.yml"
    config.write_text(ALERTMANAGER_CONFIG.format(sink=sink))
    extra = []
    if login is not None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # bcrypt through the C library (libxcrypt): what Alertmanager's web config reads

            # bcrypt at its lowest cost: a test password, hashed fast
            hashed = crypt.crypt(login[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # noqa: S324
        web = directory / "web.yml"
        web.write_text(f"basic_auth_users:\n  {login[0]}: '{hashed}'\n")
        extra = [f"--web.config.file={web}"]
    port = free_port()
    log = directory / "alertmanager.log"
    out = log.open("w")
    process = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={config}", f"--storage.path={directory / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", *extra],
        stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    manager = Alertmanager(f"http://127.0.0.1:{port}", process, log, login)
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if requests.get(f"{manager.url}/-/ready", timeout=1, auth=login).status_code == 200:
                return manager
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
