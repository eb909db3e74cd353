"""A throwaway NFS server for the tests: nfs-ganesha (FSAL VFS, NFSv4 only: no rpcbind) in the
foreground on 127.0.0.1 and a free port, everything under one directory, with one export
`/external` of `<directory>/export` open to 127.0.0.1 without root squash, which is what an
external NFS pool (storage/providers/nfs.py, mode external) points at. Started once per session
on first use (tests/storage/conftest.py `nfs_server`) and stopped at its end. Ready in about
0.1 s.

Managed NFS pools start their own ganesha, as a node's agent does (the provider's `prepare`);
`stop_managed` stops it and lets go of its bind mounts after a test.

There is no kernel NFS client on the build machines: data goes through the protocol from
Python (nfs-rs), as `client` opens it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import time
from pathlib import Path

from tests.conftest import free_port

STARTUP_TIMEOUT = 15
EXPORT = "/external"

CONF = """NFS_CORE_PARAM {{ Bind_Addr = 127.0.0.1; NFS_Port = {port}; Protocols = 4;
    Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }}
NFSv4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = "{dir}/recovery"; Only_Numeric_Owners = true; }}
NFS_KRB5 {{ Active_krb5 = false; }}
LOG {{ Default_Log_Level = EVENT; }}
EXPORT {{ Export_Id = 1; Path = "{dir}/export"; Pseudo = "{export}"; Access_Type = None;
    Squash = No_Root_Squash; SecType = sys; Protocols = 4; Transports = TCP; FSAL {{ Name = VFS; }}
    CLIENT {{ Clients = 127.0.0.1; Access_Type = RW; }} }}
"""


@dataclasses.dataclass
class Server:
    directory: Path
    port: int
    process: subprocess.Popen
    started_in: float  # seconds from exec to serving

    @property
    def export_dir(self) -> Path:
        """The exported directory, as the server's own file system holds it."""
        return self.directory / "export"

    @property
    def options(self) -> dict:
        """An external NFS pool's options on this server."""
        return {"mode": "external", "server": "127.0.0.1", "port": self.port, "export": EXPORT}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(directory: Path) -> Server:
    """ganesha serving `<directory>/export` as /external on 127.0.0.1 (a free port)."""
    for sub in ("export", "recovery"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf, log = directory / "ganesha.conf", directory / "ganesha.log"
    conf.write_text(CONF.format(port=port, dir=directory, export=EXPORT))
    began = time.monotonic()
    with open(directory / "ganesha.out", "ab") as out:
        process = subprocess.Popen(
            ["ganesha.nfsd", "-F", "-f", str(conf), "-L", str(log), "-p", str(directory / "ganesha.pid")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    server = Server(directory, port, process, 0.0)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "NFS SERVER INITIALIZED" not in (log.read_text(errors="replace") if log.exists() else ""):
            if process.poll() is not None or time.monotonic() > deadline:
                said = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"the test NFS server did not start (exit {process.poll()}):\n{said}")
            time.sleep(0.02)
        server.started_in = time.monotonic() - began
        return server
    except BaseException:
        server.stop()
        raise


def client(address: str, port: int, path: str, **options):
    """An NFSv4.1 client (nfs-rs) of `path` on the server."""
    import nfs_rs

    options.setdefault("connect_timeout", 5)
    options.setdefault("operation_timeout", 10)
    return nfs_rs.Client.connect(f"nfs://{address}:{port}{path}?version=4.1", **options)


def refused(address: str, port: int, path: str) -> str | None:
    """Why this machine (127.0.0.1) cannot open `path`, None when it can."""
    import nfs_rs

    try:
        client(address, port, path).close()
    except nfs_rs.NfsError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def stop_managed(provider, *, graceful: bool = True) -> None:
    """Stop a managed pool's ganesha (started by the provider) and release its bind mounts;
    not `graceful`: killed at once (a test's throwaway server; ganesha takes 2 s to shut down)."""
    with contextlib.suppress(Exception):
        provider.stop_server(**({} if graceful else {"timeout": 0}))
