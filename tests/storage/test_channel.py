"""The agents' data channel (storage/channel.py) in this process, on real btrfs: a receiving
endpoint for one node, snapshot streams sent to it full and incremental (only the change
travels, counted at both ends), and every request without the right token refused."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
import requests

from hivemind.nodes.models import Node
from storage import channel
from storage.models import StoragePool
from storage.replication import replication_name
from storage.steps import provider_of

MiB = 1 << 20


def digest(path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def write_random(path, size: int, offset: int = 0) -> None:
    with open(path, "r+b" if os.path.exists(path) else "wb") as file:
        file.seek(offset)
        for _ in range(size // MiB):
            file.write(os.urandom(MiB))
        os.fsync(file.fileno())


@pytest.fixture
def two_pools(transactional_db, btrfs_mount):
    """Pools `ch-a` on node ch-a and `ch-b` on node ch-b (two directories of one btrfs file
    system), and ch-b's data endpoint serving in this process."""
    pools = []
    for name in ("ch-a", "ch-b"):
        node = Node.objects.create(name=name, address="127.0.0.1", status=Node.Status.READY)
        pool = StoragePool.objects.create(
            name=name, provider="btrfs", node=node, path=str(btrfs_mount / f"channel-{name}-{time.time_ns()}")
        )
        provider_of(pool).prepare()
        pools.append(pool)
    server = channel.DataServer("ch-b", "127.0.0.1", 0)
    channel.register("ch-b", server.url)
    try:
        yield pools[0], pools[1], server.url
    finally:
        server.stop()
        for pool in pools:
            provider_of(pool).delete("v1")


def test_full_then_incremental_only_the_change_travels(two_pools):
    source_pool, target_pool, base = two_pools
    source, target = provider_of(source_pool), provider_of(target_pool)
    source.create("v1", 256 * MiB)
    data = source.path("v1") / "data"
    write_random(data, 48 * MiB)
    first, second = replication_name(1), replication_name(2)
    source.snapshot("v1", first)

    def send(snapshot, parent):
        return channel.send(
            base, pool=target_pool.pk, volume="v1", snapshot=snapshot, parent=parent,
            export=lambda out: source.export("v1", snapshot, out, parent=parent),
        )  # fmt: skip

    full = send(first, None)
    assert full["sent"] == full["received"] and 48 * MiB <= full["received"] < 52 * MiB, full
    assert channel.held(base, pool=target_pool.pk, volume="v1") == [first]

    write_random(data, 8 * MiB, offset=16 * MiB)  # 8 MiB of the 48 change
    source.snapshot("v1", second)
    incremental = send(second, first)
    assert incremental["sent"] == incremental["received"], incremental
    assert 8 * MiB <= incremental["received"] <= 1.2 * 8 * MiB, incremental
    received = target.root / "snapshots" / "v1" / second / "data"
    assert digest(received) == digest(source.root / "snapshots" / "v1" / second / "data")
    assert channel.held(base, pool=target_pool.pk, volume="v1") == [first, second]


def test_requests_without_the_right_token_are_refused(two_pools):
    source_pool, target_pool, base = two_pools
    url = f"{base}/v1/pools/{target_pool.pk}/volumes/v1/snapshots/"
    put = f"{url}{replication_name(7)}"

    def bearer(token):
        return {"Authorization": f"Bearer {token}"}

    assert requests.get(url, timeout=10).status_code == 401
    assert requests.put(put, data=b"x" * 100, timeout=10).status_code == 401
    forged = channel.mint(op="list", pool=target_pool.pk, volume="v1")[:-4] + "AAAA"
    assert requests.get(url, headers=bearer(forged), timeout=10).status_code == 401
    # A genuine token, for another request: another volume, operation, snapshot or parent.
    for claims in (
        {"op": "list", "pool": target_pool.pk, "volume": "v2"},
        {"op": "receive", "pool": target_pool.pk, "volume": "v1", "snapshot": replication_name(7)},
    ):
        response = requests.get(url, headers=bearer(channel.mint(**claims)), timeout=10)
        assert response.status_code == 403, (claims, response.text)
    wrong_parent = channel.mint(op="receive", pool=target_pool.pk, volume="v1", snapshot=replication_name(7))
    response = requests.put(f"{put}?parent={replication_name(6)}", data=b"x", headers=bearer(wrong_parent), timeout=10)
    assert response.status_code == 403
    # A pool this node does not hold, with a token for it.
    other = f"{base}/v1/pools/{source_pool.pk}/volumes/v1/snapshots/"
    token = channel.mint(op="list", pool=source_pool.pk, volume="v1")
    response = requests.get(other, headers=bearer(token), timeout=10)
    assert response.status_code == 403 and "holds no pool" in response.json()["detail"]
    # An expired token.
    from django.core import signing

    old = signing.TimestampSigner(salt=channel.SALT)
    stale = old.sign_object({"op": "list", "pool": target_pool.pk, "volume": "v1", "snapshot": None, "parent": None})
    stale_time = signing.b62_encode(int(time.time()) - channel.TOKEN_TTL - 5)
    value, _stamp, _sig = stale.rsplit(":", 2)
    resigned = old.signature(f"{value}:{stale_time}")
    response = requests.get(url, headers=bearer(f"{value}:{stale_time}:{resigned}"), timeout=10)
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    # Names that are not handles never reach a provider.
    assert requests.get(f"{base}/v1/pools/{target_pool.pk}/volumes/../snapshots/", timeout=10).status_code == 404
    # Nothing was received by any of it.
    assert provider_of(target_pool).snapshots("v1") == []
