"""The key hierarchy (tenants/keys.py): data keys wrapped by tenant keys wrapped by the master key,
bound to their tenant and object, rotated without changing the data keys; the master key file
made once, and its absence or a different one a clear start-up error that writes nothing."""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets

import pytest
from django.conf import settings as django_settings

from hivemind.config import ConfigError, load_config
from tenants import keys
from tenants.checks import master_key as master_key_system_check
from tenants.models import AuditEvent, TenantKey, WrappedKey


@pytest.fixture
def var_dir(settings, tmp_path):
    """A var dir of the test's own (master.key lives there), and no HIVEMIND_MASTER_KEY."""
    settings.VAR_DIR = tmp_path
    settings.CONFIG = dataclasses.replace(django_settings.CONFIG, var_dir=tmp_path, master_key=b"")
    return tmp_path


def test_a_data_key_round_trips_and_is_stored_only_wrapped(world, var_dir):
    assert not (var_dir / "master.key").exists()
    key = keys.data_key_create(tenant=world.a, purpose="volume", object_id=7)
    assert len(key) == 32
    assert keys.data_key(tenant=world.a, purpose="volume", object_id="7") == key
    # The master key was made on this first use: 0600, base64 of 32 bytes.
    path = var_dir / "master.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(path.read_text())) == 32
    row = WrappedKey.objects.get(tenant=world.a, purpose="volume", object_id="7")
    tenant_key = TenantKey.objects.get(tenant=world.a, active=True)
    assert key not in bytes(row.wrapped) and row.key_version == tenant_key.version == 1
    assert base64.b64decode(path.read_text()) not in bytes(tenant_key.wrapped)
    # Steps run again: exist_ok returns the same key, without it a second key is refused.
    assert keys.data_key_create(tenant=world.a, purpose="volume", object_id=7, exist_ok=True) == key
    with pytest.raises(ValueError, match="already has a key"):
        keys.data_key_create(tenant=world.a, purpose="volume", object_id=7)
    # A copy (a clone) has the same key under its own row; deleting one leaves the other.
    assert keys.data_key_copy(tenant=world.a, purpose="volume", source_id=7, object_id=8) == key
    assert keys.data_key_delete(tenant=world.a, purpose="volume", object_id=7)
    assert not keys.has_data_key(tenant=world.a, purpose="volume", object_id=7)
    assert keys.data_key(tenant=world.a, purpose="volume", object_id=8) == key
    with pytest.raises(keys.KeyUnavailable, match="has no key"):
        keys.data_key(tenant=world.a, purpose="volume", object_id=7)


def test_a_wrapped_key_opens_only_for_its_tenant_and_object(world, var_dir):
    key_a = keys.data_key_create(tenant=world.a, purpose="volume", object_id=1)
    keys.data_key_create(tenant=world.b, purpose="volume", object_id=2)
    row_a = WrappedKey.objects.get(tenant=world.a, object_id="1")
    # Tenant A's wrapped key moved onto tenant B (same object id, B's key version): B's key cannot open it.
    version_b = TenantKey.objects.get(tenant=world.b, active=True).version
    WrappedKey.objects.create(tenant=world.b, purpose="volume", object_id="1", key_version=version_b,
                              nonce=row_a.nonce, wrapped=row_a.wrapped)  # fmt: skip
    with pytest.raises(keys.KeyUnavailable):
        keys.data_key(tenant=world.b, purpose="volume", object_id=1)
    # Even given tenant A's own key, it does not open as another object's or purpose's key.
    WrappedKey.objects.create(tenant=world.a, purpose="volume", object_id="99", key_version=row_a.key_version,
                              nonce=row_a.nonce, wrapped=row_a.wrapped)  # fmt: skip
    with pytest.raises(keys.KeyUnavailable):
        keys.data_key(tenant=world.a, purpose="volume", object_id=99)
    # Tenant B's key-encryption key itself does not open A's data key.
    master = keys.master_key()
    kek_b = keys._kek(TenantKey.objects.get(tenant=world.b, active=True), master)
    with pytest.raises(keys.KeyUnavailable):
        keys._open(kek_b, row_a.nonce, row_a.wrapped, keys._data_ad(world.a.pk, "volume", "1"), "A's key")
    assert keys.data_key(tenant=world.a, purpose="volume", object_id=1) == key_a  # A's own still opens


def test_rotation_rewraps_every_data_key_and_retires_the_old_tenant_key(world, var_dir):
    originals = {n: keys.data_key_create(tenant=world.a, purpose="volume", object_id=n) for n in (1, 2, 3)}
    other = keys.data_key_create(tenant=world.b, purpose="volume", object_id=1)
    before = {r.object_id: bytes(r.wrapped) for r in WrappedKey.objects.filter(tenant=world.a)}
    b_before = bytes(WrappedKey.objects.get(tenant=world.b).wrapped)

    new = keys.tenant_key_rotate(tenant=world.a, actor=world.users["staff"])
    assert new.version == 2 and new.active
    old = TenantKey.objects.get(tenant=world.a, version=1)
    assert not old.active and old.retired_at is not None and bytes(old.wrapped) == b""  # nothing left to open
    for n, key in originals.items():
        assert keys.data_key(tenant=world.a, purpose="volume", object_id=n) == key  # the data keys did not change
    rows = WrappedKey.objects.filter(tenant=world.a)
    assert {r.key_version for r in rows} == {2}
    assert all(bytes(r.wrapped) != before[r.object_id] for r in rows)
    # Tenant B is untouched.
    assert bytes(WrappedKey.objects.get(tenant=world.b).wrapped) == b_before
    assert keys.data_key(tenant=world.b, purpose="volume", object_id=1) == other
    event = AuditEvent.objects.get(action="tenant.key_rotate")
    assert event.changes == {"version": [1, 2], "data_keys": 3}

    # Again: v3; a data key made after a rotation is wrapped by the newest key.
    keys.tenant_key_rotate(tenant=world.a, actor=None)
    keys.data_key_create(tenant=world.a, purpose="volume", object_id=4)
    assert set(WrappedKey.objects.filter(tenant=world.a).values_list("key_version", flat=True)) == {3}
    assert TenantKey.objects.filter(tenant=world.a, active=True).get().version == 3


def test_a_missing_master_key_file_is_a_start_up_error_and_none_is_made(world, var_dir):
    keys.master_key_check()  # nothing wrapped yet, no file: fine (made on first use)
    assert master_key_system_check() == []
    key = keys.data_key_create(tenant=world.a, purpose="volume", object_id=1)
    path = var_dir / "master.key"
    saved = path.read_bytes()
    keys.master_key_check()

    path.unlink()
    with pytest.raises(ConfigError) as caught:
        keys.master_key_check()
    message = str(caught.value)
    assert message.startswith("HIVEMIND_MASTER_KEY: not set, and ") and str(path) in message
    assert "No new key is made" in message
    assert not path.exists()
    # Neither a use nor a new tenant's first key makes one either.
    with pytest.raises(ConfigError):
        keys.data_key(tenant=world.a, purpose="volume", object_id=1)
    with pytest.raises(ConfigError):
        keys.data_key_create(tenant=world.b, purpose="volume", object_id=2)
    assert not path.exists() and not TenantKey.objects.filter(tenant=world.b).exists()
    [critical] = master_key_system_check()
    assert critical.id == "tenants.E001" and "HIVEMIND_MASTER_KEY" in critical.msg

    # Another key in its place: refused, and the file is left as it is.
    other = base64.b64encode(secrets.token_bytes(32)).decode() + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(other)
    with pytest.raises(ConfigError, match="does not open the tenant keys"):
        keys.master_key_check()
    assert path.read_text() == other
    # Damaged, or readable by others: refused, left alone.
    path.write_text("not a key\n")
    with pytest.raises(ConfigError, match=r"is not base64.*left as it is"):
        keys.master_key_check()
    path.write_bytes(saved)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        keys.master_key_check()
    path.chmod(0o600)
    keys.master_key_check()
    assert keys.data_key(tenant=world.a, purpose="volume", object_id=1) == key


def test_the_master_key_from_the_environment(world, settings, tmp_path):
    master = secrets.token_bytes(32)
    env = {**os.environ, "HIVEMIND_VAR_DIR": str(tmp_path), "HIVEMIND_MASTER_KEY": base64.b64encode(master).decode()}
    config = load_config(env)
    assert config.master_key == master and base64.b64encode(master).decode() not in repr(config)
    settings.VAR_DIR, settings.CONFIG = tmp_path, config
    key = keys.data_key_create(tenant=world.a, purpose="volume", object_id=1)
    assert not (tmp_path / "master.key").exists()  # the variable's key, no file
    keys.master_key_check()
    settings.CONFIG = dataclasses.replace(config, master_key=secrets.token_bytes(32))
    with pytest.raises(ConfigError, match="HIVEMIND_MASTER_KEY: its value does not open"):
        keys.master_key_check()
    settings.CONFIG = config
    assert keys.data_key(tenant=world.a, purpose="volume", object_id=1) == key

    for bad, expected in (("abc", "not base64"), (base64.b64encode(b"short").decode(), "holds 5 bytes")):
        with pytest.raises(ConfigError, match=f"HIVEMIND_MASTER_KEY: .*{expected}") as caught:
            load_config({**env, "HIVEMIND_MASTER_KEY": bad})
        assert bad not in str(caught.value)


def test_keys_are_nowhere_in_the_admin(world, var_dir, client):
    from django.contrib import admin

    assert TenantKey not in admin.site._registry and WrappedKey not in admin.site._registry


def test_the_rotation_command(world, var_dir):
    from io import StringIO

    from django.core.management import CommandError, call_command

    key = keys.data_key_create(tenant=world.a, purpose="volume", object_id=1)
    out = StringIO()
    call_command("rotate_tenant_key", world.a.slug, stdout=out)
    assert out.getvalue() == f"tenant {world.a.slug}: key version 2, every data key re-wrapped\n"
    assert keys.data_key(tenant=world.a, purpose="volume", object_id=1) == key
    with pytest.raises(CommandError, match="no tenant with the slug"):
        call_command("rotate_tenant_key", "nope")
