"""Backup test fixtures: the S3, Azure and GCS protocol peers (tests/backups/peers.py), each
started once per session on first use and stopped at its end, and one location per kind.

`backup_location` is the fixture a suite uses to run against every kind of location:

    def test_round_trip(backup_location):
        kind, config, secrets = backup_location      # e.g. ("s3", {"endpoint_url": ..., ...}, {...})
        store = open_store(kind, config, secrets)

It is parametrized over PEERS ("local", "s3", "radosgw", "azure", "gcs": radosgw is an s3
location on the session's throwaway Ceph cluster, tests/ceph.py), so the test runs five times
(ids test_round_trip[local] ... [gcs]); each gets a fresh, unique prefix (or directory) of its own,
so nothing one test writes is seen by another. The config and secrets are what
backups.stores.registry.validate accepts: pass them to the API or to open_store as they are.
Only the peers a test actually uses are started (`-k local` starts none).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from . import peers

PEERS = ["local", "s3", "radosgw", "azure", "gcs"]
_serial = itertools.count()


def _peer(start, tmp_path_factory, name: str) -> Iterator[peers.Peer]:
    peer = start(tmp_path_factory.mktemp(name))
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="session")
def s3_peer(tmp_path_factory) -> Iterator[peers.Peer]:
    """moto_server with IAM on, a bucket, and the keys of a user allowed s3:*."""
    yield from _peer(peers.start_moto, tmp_path_factory, "moto")


@pytest.fixture(scope="session")
def azure_peer(tmp_path_factory) -> Iterator[peers.Peer]:
    """Azurite's blob service, a container, and the development account's shared key."""
    yield from _peer(peers.start_azurite, tmp_path_factory, "azurite")


@pytest.fixture(scope="session")
def gcs_peer(tmp_path_factory) -> Iterator[peers.Peer]:
    """fake-gcs-server (in memory) and a bucket; anonymous, through the endpoint override."""
    yield from _peer(peers.start_fake_gcs, tmp_path_factory, "gcs")


@pytest.fixture(scope="session")
def radosgw_peer(ceph_cluster) -> peers.Peer:
    """Ceph's radosgw (the production S3 server) on the session's cluster, a bucket, a user's keys."""
    return peers.radosgw(ceph_cluster)


def location_for(peer_name: str, request: pytest.FixtureRequest, tmp_path_factory) -> tuple[str, dict, dict]:
    """(kind, config, secrets) of a fresh, empty location at `peer_name` (one of PEERS)."""
    kind = peers.KIND.get(peer_name, peer_name)
    unique = f"t{next(_serial)}-{request.node.name[:40]}"
    unique = "".join(c if c.isalnum() or c in "._-" else "-" for c in unique)
    if kind == "local":
        return "local", {"path": str(tmp_path_factory.mktemp("location"))}, {}
    peer = request.getfixturevalue(f"{peer_name}_peer")
    return kind, {**peer.config, "prefix": f"tests/{unique}"}, dict(peer.secrets)


@pytest.fixture(params=PEERS)
def backup_location(request, tmp_path_factory) -> tuple[str, dict, dict]:
    return location_for(request.param, request, tmp_path_factory)


@pytest.fixture
def same_master_key(world, subprocess_env):
    """The web process opens the tenants' keys as this process does (its var dir is its own):
    this process's master key (made now if there is none yet) in its environment."""
    import base64

    from tenants import keys as tenant_keys

    master = tenant_keys._master_key_for_new_tenant_key()
    subprocess_env["HIVEMIND_MASTER_KEY"] = base64.b64encode(master).decode()
