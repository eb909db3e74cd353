"""The store contract, the same for every kind of location, against real peers (moto's S3,
Azurite, fake-gcs-server) and a directory; the failures a location has (no bucket, wrong keys,
nobody listening) with the server's answer and never a secret; registry.validate's checks."""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import uuid

import boto3
import pytest
from azure.storage.blob import BlobServiceClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from backups.stores import AzureStore, Conflict, GCSStore, NotFound, S3Store, StoreError
from backups.stores.registry import StoreConfigError, open_store, validate
from tests.conftest import free_port

from . import peers


@pytest.fixture
def store(backup_location):
    kind, config, secrets = backup_location
    return open_store(kind, *validate(kind, config, secrets))


def test_objects_read_back_whole_and_in_ranges(store):
    data = bytes(range(256)) * 40
    store.put("data/ab/ab12", data)
    assert store.get("data/ab/ab12") == data
    assert store.size("data/ab/ab12") == len(data)
    assert store.exists("data/ab/ab12")
    assert store.get_range("data/ab/ab12", 300, 10) == data[300:310]
    assert store.get_range("data/ab/ab12", len(data) - 4, 100) == data[-4:]  # fewer only at the end
    assert store.get_range("data/ab/ab12", len(data), 10) == b""
    assert store.get_range("data/ab/ab12", 0, 0) == b""
    store.put("data/ab/ab12", b"replaced")  # a plain put overwrites
    assert store.get("data/ab/ab12") == b"replaced"
    store.put("empty", b"")
    assert (store.get("empty"), store.size("empty")) == (b"", 0)


def test_an_absent_key_is_not_found(store):
    for read in (store.get, store.size, lambda key: store.get_range(key, 0, 10)):
        with pytest.raises(NotFound, match="no object data/none"):
            read("data/none")
    assert not store.exists("data/none")


def test_list_gives_key_order_and_filters_by_prefix(store):
    keys = ["a/b", "a-b", "a.b", "a/c/d", "ab", "b", "a/c/e", "A"]
    for key in random.sample(keys, len(keys)):
        store.put(key, key.encode() * 3)
    assert list(store.list()) == [(key, len(key) * 3) for key in sorted(keys)]
    assert [key for key, _ in store.list("a/")] == ["a/b", "a/c/d", "a/c/e"]
    assert [key for key, _ in store.list("a/c/")] == ["a/c/d", "a/c/e"]
    assert list(store.list("zzz")) == []


def test_a_location_sees_only_its_own_prefix(backup_location):
    kind, config, secrets = backup_location
    sibling = dict(config)
    if kind == "local":
        sibling["path"] = config["path"] + "-sibling"
    else:
        sibling["prefix"] = config["prefix"] + "-sibling"  # a longer name sharing the first's prefix
    mine, theirs = open_store(kind, config, secrets), open_store(kind, sibling, secrets)
    theirs.put("index/1", b"theirs")
    mine.put("index/2", b"mine")
    assert list(mine.list()) == [("index/2", 4)]
    assert list(theirs.list()) == [("index/1", 6)]
    with pytest.raises(NotFound):
        mine.get("index/1")


def test_delete_removes_and_is_idempotent(store):
    store.put("locks/x", b"1")
    store.delete("locks/x")
    assert not store.exists("locks/x")
    store.delete("locks/x")
    store.delete("never/there")
    assert list(store.list()) == []


def test_create_only_refuses_a_taken_key_and_keeps_its_object(store):
    store.put("locks/exclusive", b"first", create_only=True)
    with pytest.raises(Conflict, match="locks/exclusive exists"):
        store.put("locks/exclusive", b"second", create_only=True)
    assert store.get("locks/exclusive") == b"first"
    store.delete("locks/exclusive")
    store.put("locks/exclusive", b"third", create_only=True)  # free again once deleted
    assert store.get("locks/exclusive") == b"third"


def test_racing_create_only_puts_have_exactly_one_winner(store):
    contenders = 4
    for round_ in range(3):
        key = f"locks/race-{round_}"
        start = threading.Barrier(contenders)
        winners, losers, failures = [], [], []

        def contend(n, key=key, start=start, winners=winners, losers=losers, failures=failures):
            start.wait()
            try:
                store.put(key, f"holder {n}".encode(), create_only=True)
                winners.append(n)
            except Conflict:
                losers.append(n)
            except Exception as exc:  # reported below, whatever it is
                failures.append(exc)

        threads = [threading.Thread(target=contend, args=(n,)) for n in range(contenders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert len(winners) == 1 and len(losers) == contenders - 1
        assert store.get(key) == f"holder {winners[0]}".encode()


def test_check_passes_and_leaves_nothing_behind(store):
    store.check()
    assert list(store.list()) == []


def test_a_bad_key_is_refused_before_any_request(store):
    for key in ("../escape", "/absolute", "a//b", "space here", ""):
        with pytest.raises(ValueError, match="not a store key"):
            store.put(key, b"x")


@pytest.mark.parametrize("peer_name", ["s3", "radosgw", "azure", "gcs"])
def test_a_big_object_goes_up_in_parts_and_appears_whole(peer_name, request):
    """Parts made small here (S3's smallest is 5 MiB) so that a test-sized object needs several."""
    peer, kind = request.getfixturevalue(f"{peer_name}_peer"), peers.KIND.get(peer_name, peer_name)
    config, secrets = validate(kind, {**peer.config, "prefix": f"parts/{uuid.uuid4().hex}"}, peer.secrets)
    store, data = {
        "s3": lambda: (S3Store(**config, **secrets, multipart_threshold=5 << 20), os.urandom((5 << 20) + 1000)),
        "azure": lambda: (AzureStore(**config, **secrets, single_put_size=64 << 10, block_size=16 << 10),
                          os.urandom(100_000)),
        "gcs": lambda: (GCSStore(**config, **secrets, chunk_size=256 << 10), os.urandom(600_000)),
    }[kind]()  # fmt: skip
    store.put("packs/big", data)
    assert store.get("packs/big") == data
    assert store.get_range("packs/big", len(data) - 10, 20) == data[-10:]
    name = f"{config['prefix']}/packs/big"
    if kind == "s3":  # a multipart object's ETag counts its parts
        client = boto3.client(
            "s3", endpoint_url=peer.endpoint, region_name="us-east-1",
            aws_access_key_id=secrets["access_key_id"], aws_secret_access_key=secrets["secret_access_key"],
        )  # fmt: skip
        assert client.head_object(Bucket=peers.BUCKET, Key=name)["ETag"].endswith('-2"')
    if kind == "azure":  # committed as a list of blocks
        service = BlobServiceClient(peer.endpoint, credential={"account_name": "devstoreaccount1", **secrets})
        committed, _ = service.get_blob_client(peers.BUCKET, name).get_block_list("committed")
        assert len(committed) == 7
    if kind != "s3":  # create-only holds for staged uploads too (S3's are always one request)
        with pytest.raises(Conflict):
            store.put("packs/big", data[::-1], create_only=True)
        assert store.get("packs/big") == data
        store.put("packs/new", data, create_only=True)
        assert store.size("packs/new") == len(data)


# -- how a location fails ---------------------------------------------------------------------


def _secret_values(secrets: dict) -> list[str]:
    return [value for value in secrets.values() if value]


def _assert_no_secret(text: str, secrets: dict) -> None:
    for value in _secret_values(secrets):
        assert value not in text
        assert value[:12] not in text  # not even a piece of it


@pytest.mark.parametrize(
    ("peer_name", "answer"),
    [
        ("s3", r"NoSuchBucket The specified bucket does not exist \(HTTP 404\)"),
        ("radosgw", r"NoSuchBucket .*\(HTTP 404\)"),
        ("azure", r"ContainerNotFound The specified container does not exist\. \(HTTP 404\)"),
        ("gcs", r"Not Found \(HTTP 404\)"),  # all fake-gcs-server says
    ],
)
def test_a_missing_bucket_fails_the_check_with_the_servers_answer(peer_name, answer, request):
    peer, kind = request.getfixturevalue(f"{peer_name}_peer"), peers.KIND.get(peer_name, peer_name)
    field = "container" if kind == "azure" else "bucket"
    config = {**peer.config, field: "no-such-bucket", "prefix": "p"}
    store = open_store(kind, config, peer.secrets)
    with pytest.raises(StoreError) as failure:
        store.check()
    assert not isinstance(failure.value, NotFound)
    message = str(failure.value)
    assert message.startswith(f"{store.describe()}: writing check/probe-")
    assert "no-such-bucket" in message
    assert re.search(answer, message), message
    _assert_no_secret(message, peer.secrets)


@pytest.mark.parametrize(
    ("peer_name", "wrong", "answer"),
    [
        ("s3", {"secret_access_key": "wrong-secret-WRONG-secret-0123456789"}, "SignatureDoesNotMatch"),
        ("s3", {"access_key_id": "AKIAWRONGWRONGWRONG1"}, r"InvalidAccessKeyId .*\(HTTP 403\)"),
        ("radosgw", {"secret_access_key": "wrong-secret-WRONG-secret-0123456789"}, "SignatureDoesNotMatch"),
        ("radosgw", {"access_key_id": "AKIAWRONGWRONGWRONG1"}, r"InvalidAccessKeyId .*\(HTTP 403\)"),
        ("azure", {"account_key": "V3JvbmcgYWNjb3VudCBrZXkh"}, r"Server failed to authenticate .* \(HTTP 403\)"),
    ],
)
def test_wrong_credentials_fail_with_the_servers_answer_and_no_secret(peer_name, wrong, answer, request):
    peer, kind = request.getfixturevalue(f"{peer_name}_peer"), peers.KIND.get(peer_name, peer_name)
    secrets = {**peer.secrets, **wrong}
    store = open_store(kind, {**peer.config, "prefix": "wrong-keys"}, secrets)
    with pytest.raises(StoreError) as failure:
        store.check()
    message = str(failure.value)
    assert re.search(answer, message), message
    assert store.describe() in message
    _assert_no_secret(message, secrets)
    _assert_no_secret(message, peer.secrets)
    _assert_no_secret(repr(store) + store.describe() + repr(failure.value), secrets)
    with pytest.raises(StoreError) as failure:
        list(store.list())
    _assert_no_secret(str(failure.value), secrets)


def test_no_store_shows_a_secret(s3_peer, azure_peer, gcs_peer):
    for kind, peer in (("s3", s3_peer), ("azure", azure_peer)):
        store = open_store(kind, {**peer.config, "prefix": "shown"}, peer.secrets)
        _assert_no_secret(repr(store) + str(store) + store.describe(), peer.secrets)
    sas = "sv=2024-08-04&ss=b&srt=co&sp=rwdl&se=2099-01-01T00:00:00Z&sig=U2lnbmF0dXJlT2ZUaGVUZXN0cw%3D%3D"
    store = open_store("azure", {**azure_peer.config, "prefix": "sas"}, {"sas_token": sas})
    with pytest.raises(StoreError) as failure:
        store.check()  # Azurite refuses a signature it did not make
    assert "AuthorizationFailure" in str(failure.value) or "AuthenticationFailed" in str(failure.value)
    _assert_no_secret(str(failure.value) + repr(store), {"sas": sas, "sig": "U2lnbmF0dXJlT2ZUaGVUZXN0cw"})


@pytest.mark.parametrize("kind", ["s3", "azure", "gcs"])
def test_an_endpoint_nobody_listens_on_fails_fast_and_says_so(kind):
    url = f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens there
    config, secrets = {
        "s3": ({"endpoint_url": url, "bucket": "backups"}, {"access_key_id": "AKIA01", "secret_access_key": "s3cr3t"}),
        "azure": ({"account_url": f"{url}/devstoreaccount1", "container": "backups"}, {"account_key": "c2VjcmV0"}),
        "gcs": ({"endpoint": url, "bucket": "backups"}, {}),
    }[kind]
    store = open_store(kind, config, secrets)
    started = time.monotonic()
    with pytest.raises(StoreError) as failure:
        store.check()
    assert time.monotonic() - started < 10
    message = str(failure.value)
    assert message.startswith(f"{store.describe()}: writing check/probe-")
    assert url in message
    assert re.search(r"[Cc]onnection refused|Could not connect", message), message
    _assert_no_secret(message, secrets)


def test_a_gcs_service_account_is_used_and_never_shown(gcs_peer):
    """The key signs a token request to the key's token_uri; nobody answers there, and the
    failure names that endpoint without a piece of the key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    port = free_port()  # bound and released: nothing listens there
    token_uri = f"http://127.0.0.1:{port}/token"
    account = {
        "type": "service_account",
        "project_id": "hivemind-tests",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": "backups@hivemind-tests.iam.gserviceaccount.com",
        "token_uri": token_uri,
    }
    secrets = {"service_account_json": json.dumps(account)}
    config, secrets = validate("gcs", {**gcs_peer.config, "prefix": "keyed"}, secrets)
    store = GCSStore(**config, **secrets, retry_deadline=1)
    with pytest.raises(StoreError) as failure:
        store.check()
    message = str(failure.value)
    assert f"port={port}" in message and "/token" in message and "Connection refused" in message, message
    pieces = [account["private_key_id"], *(line for line in pem.splitlines() if "-----" not in line)]
    _assert_no_secret(message + repr(store), {str(n): piece for n, piece in enumerate(pieces)})


def test_the_stores_are_what_open_store_gives(s3_peer, azure_peer, gcs_peer):
    assert isinstance(open_store("s3", s3_peer.config, s3_peer.secrets), S3Store)
    assert isinstance(open_store("azure", azure_peer.config, azure_peer.secrets), AzureStore)
    assert isinstance(open_store("gcs", gcs_peer.config, gcs_peer.secrets), GCSStore)


# -- registry.validate -------------------------------------------------------------------------

KEY_ID, SECRET_KEY = "AKIAEXAMPLEKEYID0001", "Sup3r/Secret+Access=Key-Value-0001"
ACCOUNT_KEY = "QWNjb3VudEtleU9mVGhlVGVzdHNXaGljaElzU2VjcmV0IQ=="
SERVICE_ACCOUNT = (
    '{"type": "service_account", "project_id": "hivemind-tests", "client_email": "b@hivemind-tests.iam.example",'
    ' "private_key": "-----BEGIN PRIVATE KEY-----\\nTm90QVJlYWxLZXlCdXRTZWNyZXQ=\\n-----END PRIVATE KEY-----\\n",'
    ' "token_uri": "https://oauth2.example/token"}'
)
S3_OK = {"bucket": "backups"}
SA = "service_account_json"
EMULATOR_URL = "http://127.0.0.1:1/acct/x"
AZURE_OK = {"account_url": "https://hivemindbackups.blob.core.windows.net", "container": "backups"}
GCS_OK = {"bucket": "backups", "endpoint": "http://127.0.0.1:4443"}


def test_valid_locations_are_cleaned_with_their_defaults():
    assert validate("s3", {"bucket": "backups", "prefix": "/site-a/"}, {}) == (
        {"bucket": "backups", "prefix": "site-a", "region": "us-east-1", "addressing_style": "virtual"},
        {},
    )
    config, secrets = validate(
        "s3",
        {"bucket": "b-1.x", "endpoint_url": "http://minio:9000/", "region": "eu-west-1"},
        {"access_key_id": KEY_ID, "secret_access_key": SECRET_KEY},
    )
    assert config == {
        "bucket": "b-1.x",
        "prefix": "",
        "region": "eu-west-1",
        "addressing_style": "path",
        "endpoint_url": "http://minio:9000",
    }
    assert secrets == {"access_key_id": KEY_ID, "secret_access_key": SECRET_KEY}
    assert validate("azure", {**AZURE_OK, "prefix": "a/b"}, {"sas_token": "?sv=1&sig=abc"}) == (
        {**AZURE_OK, "prefix": "a/b"},
        {"sas_token": "sv=1&sig=abc"},
    )
    assert validate("gcs", GCS_OK, {}) == ({**GCS_OK, "prefix": ""}, {})
    assert validate("gcs", {"bucket": "backups"}, {"service_account_json": SERVICE_ACCOUNT})[1] == {
        "service_account_json": SERVICE_ACCOUNT
    }


@pytest.mark.parametrize(
    ("kind", "config", "secrets", "field", "words"),
    [
        ("s3", {}, {}, "bucket", "required"),
        ("s3", {"bucket": "Not_A_Bucket"}, {}, "bucket", "3-63 lowercase"),
        ("s3", {"bucket": "192.168.1.10"}, {}, "bucket", "IP address"),
        ("s3", {**S3_OK, "endpoint_url": "ftp://example.com"}, {}, "endpoint_url", "http:// or https://"),
        ("s3", {**S3_OK, "endpoint_url": "http://user:pw@example.com"}, {}, "endpoint_url", "credentials"),
        ("s3", {**S3_OK, "endpoint_url": "http://example.com:99999"}, {}, "endpoint_url", "port"),
        ("s3", {**S3_OK, "prefix": "a/../b"}, {}, "prefix", "no '..'"),
        ("s3", {**S3_OK, "region": "US East"}, {}, "region", "lowercase"),
        ("s3", {**S3_OK, "addressing_style": "dns"}, {}, "addressing_style", "'path' or 'virtual'"),
        ("s3", {**S3_OK, "acl": "public"}, {}, "config", "take no acl"),
        ("s3", S3_OK, {"access_key_id": KEY_ID}, "secret_access_key", "both"),
        ("s3", S3_OK, {"secret_access_key": SECRET_KEY}, "access_key_id", "both"),
        ("s3", S3_OK, {"access_key_id": KEY_ID, "secret_access_key": SECRET_KEY + " "}, "secret_access_key", "ASCII"),
        ("s3", S3_OK, {"session_token": SECRET_KEY}, "secrets", "take no session_token"),
        ("azure", {"container": "backups"}, {"account_key": ACCOUNT_KEY}, "account_url", "required"),
        ("azure", {**AZURE_OK, "container": "Back_Ups"}, {"account_key": ACCOUNT_KEY}, "container", "3-63"),
        ("azure", {**AZURE_OK, "container": "a--b"}, {"account_key": ACCOUNT_KEY}, "container", "single '-'"),
        ("azure", {**AZURE_OK, "account_url": EMULATOR_URL}, {}, "account_url", "only name the account"),
        ("azure", {"account_url": AZURE_OK["account_url"] + "?sig=x"}, {}, "account_url", "secrets"),
        ("azure", AZURE_OK, {}, "secrets", "exactly one"),
        ("azure", AZURE_OK, {"account_key": ACCOUNT_KEY, "sas_token": "sv=1&sig=x"}, "secrets", "exactly one"),
        ("azure", AZURE_OK, {"account_key": "not*base64!" + ACCOUNT_KEY}, "account_key", "base64"),
        ("azure", AZURE_OK, {"sas_token": "sv=1&token=" + SECRET_KEY}, "sas_token", "sig="),
        ("gcs", {"bucket": "backups"}, {}, "service_account_json", "emulator"),
        ("gcs", {"bucket": "googbackups", "endpoint": GCS_OK["endpoint"]}, {}, "bucket", "goog"),
        ("gcs", {**GCS_OK, "project": "X"}, {}, "project", "6-30"),
        ("gcs", {**GCS_OK, "endpoint": "localhost:4443"}, {}, "endpoint", "http:// or https://"),
        ("gcs", S3_OK, {SA: SERVICE_ACCOUNT[:-5]}, SA, "not JSON"),
        ("gcs", S3_OK, {SA: SERVICE_ACCOUNT.replace("service_account", "user")}, SA, "service_account"),
        ("gcs", S3_OK, {SA: SERVICE_ACCOUNT.replace("PRIVATE KEY", "KEY")}, SA, "PEM"),
        ("ftp", {}, {}, "kind", "unknown location kind"),
    ],
)
def test_validate_names_the_bad_field_and_never_quotes_a_secret(kind, config, secrets, field, words):
    with pytest.raises(StoreConfigError) as failure:
        validate(kind, config, secrets)
    assert failure.value.field == field
    assert words in failure.value.message
    for value in (KEY_ID, SECRET_KEY, ACCOUNT_KEY, "PRIVATE KEY", "Tm90QVJlYWxLZXlCdXRTZWNyZXQ", "sig=x"):
        if value != words:
            assert value not in str(failure.value)
