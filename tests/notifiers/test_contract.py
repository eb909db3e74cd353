"""The contract every notifier kind keeps (notifiers/registry.py), run against each registered
kind: its settings are declared with help, checked (400 naming each bad one), secrets kept
apart; a peer that cannot be reached is a DeliveryError naming a setting, within the timeout;
and its secrets are sealed at rest."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from rest_framework.exceptions import ValidationError

from notifiers import registry, sealing, services
from notifiers.registry import DeliveryError
from tenants import keys
from tests.conftest import free_port
from tests.notifiers.test_kinds import notification

KINDS = registry.names()


def valid(kind: str, port: int) -> tuple[dict, dict]:
    """Settings of each kind for a peer on 127.0.0.1:port; a new kind must add its own here."""
    url = f"http://127.0.0.1:{port}/hook"
    return {
        "webhook": ({"url": url}, {"secret": "0123456789abcdef-secret"}),
        "slack": ({"channel": "#ops"}, {"url": url}),
        "email": (
            {
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "from": "a@example.com",
                "to": ["b@example.com"],
                "username": "alerts",
            },
            {"password": "smtp-password"},
        ),
        "alertmanager": ({"url": f"http://127.0.0.1:{port}"}, {"bearer_token": "tok"}),
    }[kind]


def errors(call) -> dict:
    with pytest.raises(ValidationError) as raised:
        call()
    return raised.value.detail


@pytest.mark.parametrize("kind", KINDS)
def test_settings_are_declared_with_help_and_secrets_named(kind):
    declared = registry.get(kind)
    assert declared.name == kind and declared.description
    assert declared.settings and all(s.help for s in declared.settings)
    assert len({s.name for s in declared.settings}) == len(declared.settings)
    assert registry.secret_names(kind) == [s.name for s in declared.settings if s.secret]


@pytest.mark.parametrize("kind", KINDS)
def test_valid_settings_are_taken_and_kept_apart(kind):
    config, secrets = valid(kind, 9)
    clean_config, clean_secrets = registry.clean(kind, config, secrets)
    assert set(clean_secrets) == set(secrets)
    assert not set(clean_config) & set(registry.secret_names(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_each_missing_required_setting_is_named(kind):
    required = [s for s in registry.get(kind).settings if s.required]
    assert required
    found = errors(lambda: registry.clean(kind, {}, {}))
    for setting in required:
        where = "secrets" if setting.secret else "config"
        assert setting.name in found[where], found


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_settings_and_secrets_in_the_wrong_place_are_named(kind):
    config, secrets = valid(kind, 9)
    found = errors(lambda: registry.clean(kind, {**config, "colour": "red"}, secrets))
    assert list(found) == ["config"] and "colour" in found["config"]
    for name in registry.secret_names(kind):
        moved = errors(lambda name=name: registry.clean(kind, {**config, name: "x" * 20}, secrets))
        assert name in moved["config"] and "belongs in secrets" in str(moved["config"][name])


@pytest.mark.parametrize("kind", KINDS)
def test_urls_other_than_http_are_refused_naming_the_setting(kind):
    config, secrets = valid(kind, 9)
    urls = [s for s in registry.get(kind).settings if s.type == "url"]
    for setting in urls:
        for bad in ("ftp://example.com/x", "file:///etc/passwd", "gopher://h/", "http://", "javascript:alert(1)"):
            where = "secrets" if setting.secret else "config"
            given = {"config": dict(config), "secrets": dict(secrets)}
            given[where][setting.name] = bad
            found = errors(lambda given=given: registry.clean(kind, given["config"], given["secrets"]))
            assert setting.name in found[where], (bad, found)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [5, None, ["x"], {"a": 1}, "x" * 5000, "a\x00b"], ids=repr)
def test_wrong_types_are_named(kind, bad):
    config, secrets = valid(kind, 9)
    for setting in registry.get(kind).settings:
        if setting.type in ("port", "bool") or bad is None:
            continue
        where = "secrets" if setting.secret else "config"
        given = {"config": dict(config), "secrets": dict(secrets)}
        given[where][setting.name] = bad
        found = errors(lambda given=given: registry.clean(kind, given["config"], given["secrets"]))
        assert setting.name in found[where], (setting.name, bad, found)


@pytest.mark.parametrize("kind", KINDS)
def test_a_peer_that_is_down_is_a_delivery_error_naming_a_setting_in_time(kind):
    config, secrets = valid(kind, free_port())
    config, secrets = registry.clean(kind, config, secrets)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as raised:
        registry.get(kind).send(config, secrets, notification(), timeout=3)
    assert time.monotonic() - started < 3
    assert raised.value.setting is not None and registry.get(kind).setting(raised.value.setting)
    for value in secrets.values():  # no secret, nor a secret URL's path (a token), in the error
        assert (
            urlsplit(value).path not in raised.value.message
            if value.startswith("http")
            else value not in str(raised.value.message)
        )


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_secrets_are_sealed_with_the_tenants_keys(kind, world):
    config, secrets = valid(kind, 9)
    notifier = services.notifier_create(tenant=world.a, name=f"sealed-{kind}", kind=kind, config=config,
                                        secrets=secrets, actor=world.users["staff"])  # fmt: skip
    sealed = bytes(notifier.sealed_secrets)
    assert notifier.secret_names == sorted(secrets)
    for value in secrets.values():
        assert value.encode() not in sealed and value not in str(notifier.config)
    assert sealing.unseal(notifier) == secrets
    # The tenant's key rotated: the data key is re-wrapped, the secrets still open.
    keys.tenant_key_rotate(tenant=world.a, actor=world.users["staff"])
    assert sealing.unseal(type(notifier).objects.get(pk=notifier.pk)) == secrets
    # Sealed bytes copied onto another notifier (of the same tenant) do not open there.
    other = services.notifier_create(tenant=world.a, name=f"other-{kind}", kind=kind, config=config,
                                     secrets=secrets, actor=world.users["staff"])  # fmt: skip
    other.sealed_secrets = sealed
    with pytest.raises(keys.KeyUnavailable):
        sealing.unseal(other)
    services.notifier_delete(notifier=notifier, actor=world.users["staff"])
    assert not keys.has_data_key(tenant=world.a, purpose=sealing.PURPOSE, object_id=notifier.pk)
