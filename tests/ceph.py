"""A throwaway single-node Ceph cluster for the tests: one monitor, one OSD on memstore, a
manager (without one the cluster reports no capacity, and a pool shows none), and radosgw (S3)
with a user, all under one directory, on ports of their own; started once per session
(tests/conftest.py `ceph_cluster`) and stopped at its end.

The cluster is made as a real one is made without cephadm: keys with ceph-authtool, a monitor
map with monmaptool, `ceph-mon --mkfs`, the OSD registered with the monitor (`osd new` with its
cephx secret) before `ceph-osd --mkfs`. Commands to the monitor go through librados, as the
platform's own do. Ready in about 4 s (8 s with radosgw) and 250 MB.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.conftest import free_port

STARTUP_TIMEOUT = 60
RGW_ACCESS_KEY = "HIVEMINDTESTACCESS"
RGW_SECRET_KEY = "hivemind-test-secret-of-the-throwaway-cluster"
# The manager only has to report figures: its other modules stay off (CPU the suite needs).
MGR_MODULES_OFF = (
    "dashboard", "prometheus", "restful", "iostat", "nfs", "balancer", "crash", "devicehealth",
    "orchestrator", "pg_autoscaler", "progress", "rbd_support", "status", "telemetry", "volumes",
)  # fmt: skip
DAEMONS = {"ceph-mon", "ceph-osd", "ceph-mgr", "radosgw"}

CONF = """[global]
fsid = {fsid}
mon_host = [v2:127.0.0.1:{mon_v2},v1:127.0.0.1:{mon_v1}]
public_addr = 127.0.0.1
public_network = 127.0.0.0/8
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = {dir}/$name.keyring
run_dir = {dir}/run
admin_socket = {dir}/run/$name.asok
log_file = {dir}/log/$name.log
pid_file = {dir}/run/$name.pid
crash_dir = {dir}/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
mon_data_avail_warn = 1
mon_data_avail_crit = 0
auth_allow_insecure_global_id_reclaim = false
paxos_propose_interval = 0.05
[client]
admin_socket = {dir}/run/$name.$pid.$cctid.asok
[mon]
mon_data = {dir}/mon/$cluster-$id
keyring = $mon_data/keyring
[mgr]
mgr_data = {dir}/mgr/$cluster-$id
mgr_disabled_modules = {mgr_off}
[osd]
osd_data = {dir}/osd/$cluster-$id
keyring = $osd_data/keyring
osd_objectstore = {objectstore}
memstore_device_bytes = {osd_bytes}
bluestore_block_path = {dir}/osd/$cluster-$id.block
bluestore_block_create = true
bluestore_block_size = {osd_bytes}
bluestore_block_db_create = false
bluestore_block_wal_create = false
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
osd_memory_target = 939524096
"""


@dataclasses.dataclass
class Cluster:
    directory: Path
    conf: Path
    monitors: str  # what a pool's `monitors` option holds
    admin_key: str  # client.admin's secret (base64), what a pool's keyring option holds
    rgw_endpoint: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CEPH_CONF": str(self.conf)}

    def rados(self):
        import rados

        return rados.Rados(conffile=str(self.conf), name="client.admin")  # `with` connects it

    def command(self, **command) -> dict | str:
        """A monitor command through librados; its JSON answer parsed."""
        with self.rados() as cluster:
            return mon_command(cluster, command)

    def make_pool(self, name: str) -> None:
        """An RBD pool (idempotent)."""
        with self.rados() as cluster:
            if not cluster.pool_exists(name):
                cluster.create_pool(name)
            mon_command(cluster, {"prefix": "osd pool application enable", "pool": name, "app": "rbd"})

    def stop(self) -> None:
        stop_daemons(self.directory)


def mon_command(cluster, command: dict) -> dict | str:
    code, out, err = cluster.mon_command(json.dumps({**command, "format": "json"}), b"", timeout=30)
    if code != 0:
        raise RuntimeError(f"ceph {command['prefix']}: {err or code}")
    try:
        return json.loads(out) if out else {}
    except ValueError:
        return out.decode()


def _run(command: list[str], env: dict, *, stdin: bytes | None = None) -> str:
    done = subprocess.run(command, env=env, input=stdin, capture_output=True, timeout=STARTUP_TIMEOUT, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.decode(errors='replace')[-2000:]}")
    return done.stdout.decode()


def _until(what: str, check, directory: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: S110 - not up yet: asked again below
            pass
        if time.monotonic() > deadline:
            logs = "".join(p.read_text(errors="replace")[-1500:] for p in (directory / "log").glob("*.log"))
            raise RuntimeError(f"the test Ceph cluster: {what} not within {STARTUP_TIMEOUT} s\n{logs}")
        time.sleep(0.2)


def start(directory: Path, *, rgw: bool = True, osd_bytes: int = 4 << 30, objectstore: str = "memstore") -> Cluster:
    """Make and start a cluster under `directory` (which must not hold one). The OSD keeps its
    data in memory (memstore, the tests') or in a sparse file beside it (bluestore, what
    bench/rbd.py measures: on disk, as btrfs on its loop file is)."""
    for sub in ("mon/ceph-a", "mgr/ceph-x", "osd", "run", "log", "crash", "rgw"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    mon_v2, mon_v1 = free_port(), free_port()
    conf = directory / "ceph.conf"
    fsid = str(uuid.uuid4())
    mgr_off = ",".join(MGR_MODULES_OFF)
    values = {"fsid": fsid, "mon_v2": mon_v2, "mon_v1": mon_v1, "dir": directory, "osd_bytes": osd_bytes,
              "mgr_off": mgr_off, "objectstore": objectstore}  # fmt: skip
    conf.write_text(CONF.format(**values))
    env = {**os.environ, "CEPH_CONF": str(conf)}
    try:
        mon_keyring, admin_keyring = directory / "mon.keyring", directory / "client.admin.keyring"
        _run(["ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.",
              "--cap", "mon", "allow *"], env)  # fmt: skip
        _run(["ceph-authtool", "--create-keyring", str(admin_keyring), "--gen-key", "-n", "client.admin",
              "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *"], env)  # fmt: skip
        _run(["ceph-authtool", str(mon_keyring), "--import-keyring", str(admin_keyring)], env)
        monitors = f"[v2:127.0.0.1:{mon_v2},v1:127.0.0.1:{mon_v1}]"
        _run(["monmaptool", "--create", "--fsid", fsid, "--addv", "a", monitors, str(directory / "monmap")], env)
        _run(["ceph-mon", "--mkfs", "-i", "a", "--monmap", str(directory / "monmap"),
              "--keyring", str(mon_keyring)], env)  # fmt: skip
        _run(["ceph-mon", "-i", "a"], env)  # forks into the background; its pid file says where
        cluster = Cluster(directory, conf, monitors, _secret(admin_keyring))
        _until("the monitor", lambda: cluster.command(prefix="mon stat") is not None, directory)

        answer = cluster.command(prefix="auth get-or-create", entity="mgr.x",
                                 caps=["mon", "allow profile mgr", "osd", "allow *"])  # fmt: skip
        (directory / "mgr" / "ceph-x" / "keyring").write_text(f"[mgr.x]\n\tkey = {answer[0]['key']}\n")
        _run(["ceph-mgr", "-i", "x", "--keyring", str(directory / "mgr" / "ceph-x" / "keyring")], env)

        osd_uuid, osd_secret = str(uuid.uuid4()), _run(["ceph-authtool", "--gen-print-key"], env).strip()
        with cluster.rados() as handle:
            code, out, err = handle.mon_command(
                json.dumps({"prefix": "osd new", "uuid": osd_uuid, "format": "json"}),
                json.dumps({"cephx_secret": osd_secret}).encode(), timeout=30,
            )  # fmt: skip
        if code:
            raise RuntimeError(f"ceph osd new: {err}")
        osd_id = json.loads(out)["osdid"]
        osd_dir = directory / "osd" / f"ceph-{osd_id}"
        osd_dir.mkdir()
        _run(["ceph-authtool", "--create-keyring", str(osd_dir / "keyring"), "--name", f"osd.{osd_id}",
              "--add-key", osd_secret], env)  # fmt: skip
        _run(["ceph-osd", "-i", str(osd_id), "--mkfs", "--osd-uuid", osd_uuid], env)
        _run(["ceph-osd", "-i", str(osd_id)], env)
        _until("the OSD up", lambda: cluster.command(prefix="osd stat")["num_up_osds"] >= 1, directory)
        _until("the manager's figures", lambda: _capacity(cluster) > 0, directory)
        if rgw:
            _start_rgw(cluster, env)
        return cluster
    except BaseException:
        stop_daemons(directory)
        raise


def _capacity(cluster: Cluster) -> int:
    with cluster.rados() as handle:
        return handle.get_cluster_stats()["kb"]


def _secret(keyring: Path) -> str:
    for line in keyring.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "key":
            return value.strip()
    raise RuntimeError(f"no key in {keyring}")


def _start_rgw(cluster: Cluster, env: dict) -> None:
    directory = cluster.directory
    answer = cluster.command(prefix="auth get-or-create", entity="client.rgw.a",
                             caps=["mon", "allow rw", "osd", "allow rwx", "mgr", "allow rw"])  # fmt: skip
    key = answer[0]["key"]
    (directory / "client.rgw.a.keyring").write_text(f"[client.rgw.a]\n\tkey = {key}\n")
    port = free_port()
    _run(["radosgw", "-n", "client.rgw.a", "--rgw_frontends", f"beast endpoint=127.0.0.1:{port}",
          "--rgw_data", str(directory / "rgw")], env)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        with contextlib.suppress(urllib.error.HTTPError):  # any answer: it is up
            urllib.request.urlopen(endpoint, timeout=2).close()
        return True

    _until("radosgw answering", answers, directory)
    _run(["radosgw-admin", "-n", "client.admin", "user", "create", "--uid=hivemind-tests",
          "--display-name=hivemind tests", f"--access-key={RGW_ACCESS_KEY}",
          f"--secret-key={RGW_SECRET_KEY}"], env)  # fmt: skip
    cluster.rgw_endpoint = endpoint


def stop_daemons(directory: Path) -> None:
    """Stop the daemons whose pid files are under `directory` (only Ceph's own: a pid reused by
    another process is left alone), then wait for them to go."""
    pids = []
    for pid_file in (directory / "run").glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            continue
        if comm in DAEMONS:
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
    deadline = time.monotonic() + 10
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
