"""Notifiers and their deliveries: services write (HackSoft), the API and the CLI call these.

`notify` is the alerting engine's one entry point: it records a Delivery and queues its
sending on the control queue, and returns at once. Sending never blocks evaluation: a peer
that is slow or down costs only the delivery task's time, which retries with exponential
backoff (HIVEMIND_NOTIFIER_BACKOFF, doubling, at most an hour) until HIVEMIND_NOTIFIER_ATTEMPTS
attempts, then marks the delivery failed with the last answer. A beat pass re-queues the
deliveries whose message was lost (a broker restart, a worker killed mid-attempt).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from hivemind.core.errors import Conflict
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label
from notifiers import registry, sealing
from notifiers.models import Delivery, Notifier
from notifiers.registry import DeliveryError
from tenants.keys import KeyUnavailable
from tenants.services import audit_record

log = logging.getLogger(__name__)
MAX_BACKOFF = 3600  # seconds: the longest wait between two attempts
LOST_AFTER = 60  # seconds a due delivery may wait for its queued attempt before beat queues it again
KEPT_FOR = timedelta(days=30)  # finished deliveries (delivered, failed) are pruned after this
STATUSES = ("firing", "resolved")


def _check_name(name) -> str:
    if not isinstance(name, str) or not is_dns_label(name):
        raise ValidationError({"name": f"expected {DNS_LABEL_RULE}, got {str(name)[:70]!r}"})
    return name


def _store_secrets(notifier: Notifier, secrets: dict) -> None:
    notifier.sealed_secrets = sealing.seal(notifier, secrets)
    notifier.secret_names = sorted(secrets)


@transaction.atomic
def notifier_create(*, tenant, name: str, kind: str, config: dict, secrets: dict | None = None, actor) -> Notifier:
    """A notifier with its settings checked by its kind; its secrets sealed with the tenant's keys."""
    name = _check_name(name)
    config, secrets = registry.clean(kind, config if config is not None else {}, secrets or {})
    try:
        with transaction.atomic():
            notifier = Notifier.objects.create(tenant=tenant, name=name, kind=kind, config=config)
    except IntegrityError:
        raise Conflict(f"a notifier named {name} exists in tenant {tenant.slug}", code="notifier_exists") from None
    _store_secrets(notifier, secrets)
    notifier.save(update_fields=["sealed_secrets", "secret_names"])
    audit_record(actor=actor, tenant=tenant, action="notifier.create", obj=notifier,
                 changes={"kind": kind, "config": config, "secrets_set": notifier.secret_names})  # fmt: skip
    return notifier


@transaction.atomic
def notifier_update(
    *, notifier: Notifier, actor, name: str | None = None, config: dict | None = None, secrets: dict | None = None
) -> Notifier:
    """Change settings: `config` and `secrets` are merged onto what is set (a null value unsets
    that setting), then the whole is checked by the kind again. The kind never changes."""
    notifier = Notifier.objects.select_for_update().select_related("tenant").get(pk=notifier.pk)
    changes: dict = {}
    if name is not None and name != notifier.name:
        changes["name"] = [notifier.name, _check_name(name)]
        notifier.name = name
    if config is not None or secrets is not None:
        for where, given in (("config", config), ("secrets", secrets)):
            if given is not None and not isinstance(given, dict):
                raise ValidationError({where: "expected an object of settings"})
        old_secrets = None
        if secrets is not None:
            try:
                old_secrets = sealing.unseal(notifier)
            except KeyUnavailable:  # damaged: what is sent now replaces them all
                old_secrets = {}
        merged_config = {**notifier.config, **(config or {})}
        merged_secrets = {**old_secrets, **secrets} if secrets is not None else {}
        if secrets is None:  # unchanged secrets are not opened: check the config against their names only
            merged_secrets = dict.fromkeys(notifier.secret_names, "x" * 64)
        new_config, new_secrets = registry.clean(notifier.kind, merged_config, merged_secrets)
        if new_config != notifier.config:
            changes["config"] = new_config
        notifier.config = new_config
        if secrets is not None:
            _store_secrets(notifier, new_secrets)
            changes["secrets_changed"] = sorted(secrets)
    try:
        with transaction.atomic():
            notifier.save()
    except IntegrityError:
        raise Conflict(
            f"a notifier named {name} exists in tenant {notifier.tenant.slug}", code="notifier_exists"
        ) from None
    audit_record(actor=actor, tenant=notifier.tenant, action="notifier.update", obj=notifier, changes=changes)
    return notifier


@transaction.atomic
def notifier_delete(*, notifier: Notifier, actor) -> None:
    """The notifier, its deliveries and its data key go (alert rules simply stop naming it)."""
    audit_record(actor=actor, tenant=notifier.tenant, action="notifier.delete", obj=notifier)
    sealing.forget(notifier)
    notifier.delete()


def test_notification(notifier: Notifier) -> dict:
    now = timezone.now()
    return {
        "group_key": f"test/{notifier.name}",
        "status": "firing",
        "rule": {"name": "hivemind-test", "severity": "info", "tenant": notifier.tenant.slug},
        "alerts": [
            {
                "labels": {"notifier": notifier.name},
                "annotations": {"summary": f"A test notification from Hivemind to notifier {notifier.name}"},
                "starts_at": now.isoformat(),
                # Alertmanager lets it expire by itself: a test is not left firing there.
                "ends_at": (now + timedelta(minutes=5)).isoformat(),
                "value": 0.0,
                "fingerprint": "test",
            }
        ],
        "url": "",
    }


def notifier_test(*, notifier: Notifier, actor) -> str:
    """Send a test notification now, within HIVEMIND_NOTIFIER_TIMEOUT: what the peer answered;
    DeliveryError with its answer (or why it could not be reached) otherwise."""
    kind = registry.get(notifier.kind)
    try:
        secrets = sealing.unseal(notifier)
    except KeyUnavailable as exc:
        raise Conflict(f"{exc}: set its secrets again", code="notifier_secrets_unavailable") from None
    answer = kind.send(notifier.config, secrets, test_notification(notifier), timeout=settings.NOTIFIER_TIMEOUT)
    audit_record(actor=actor, tenant=notifier.tenant, action="notifier.test", obj=notifier)
    return answer


# --- deliveries ----------------------------------------------------------------------------------


def _check_notification(notification) -> None:
    if not isinstance(notification, dict):
        raise ValueError("a notification is a dict")
    if notification.get("status") not in STATUSES:
        raise ValueError(f"a notification's status is firing or resolved, got {notification.get('status')!r}")
    if not isinstance(notification.get("group_key"), str) or not notification["group_key"]:
        raise ValueError("a notification needs its group_key")
    if not isinstance(notification.get("alerts"), list):
        raise ValueError("a notification's alerts are a list")


def notify(*, notifier: Notifier, notification: dict) -> Delivery:
    """Record a Delivery of `notification` to `notifier` and queue its sending (after the
    caller's transaction commits); returns at once, whatever the peer's state."""
    from hivemind.settings.celery import CONTROL_QUEUE
    from notifiers.tasks import deliver

    _check_notification(notification)
    delivery = Delivery.objects.create(
        notifier=notifier, group_key=notification["group_key"][:255], status=notification["status"],
        payload=notification, max_attempts=settings.NOTIFIER_ATTEMPTS, next_attempt_at=timezone.now(),
    )  # fmt: skip

    def queue() -> None:
        try:
            deliver.apply_async((delivery.pk,), queue=CONTROL_QUEUE)
        except Exception as exc:  # the broker is away: beat queues it again (deliveries_due)
            log.warning("delivery %s could not be queued now (%s); beat will queue it again", delivery.pk, exc)

    transaction.on_commit(queue)
    return delivery


def backoff(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: the backoff, doubling, capped."""
    return float(min(settings.NOTIFIER_BACKOFF * 2 ** (attempts - 1), MAX_BACKOFF))


def delivery_attempt(*, delivery_id: int) -> float | None:
    """One attempt at sending the delivery. Returns the seconds until its next attempt when
    it failed and may be tried again, None when it is done (delivered, failed, or not due:
    another attempt of it runs, or a duplicate message came early)."""
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(of=("self",)).select_related("notifier__tenant")
            .filter(pk=delivery_id).first()
        )  # fmt: skip
        if delivery is None or delivery.state != Delivery.State.PENDING:
            return None
        if delivery.next_attempt_at and delivery.next_attempt_at > timezone.now() + timedelta(seconds=1):
            return None
        delivery.state = Delivery.State.SENDING
        delivery.attempts += 1
        delivery.save(update_fields=["state", "attempts", "updated_at"])
    notifier = delivery.notifier
    started = time.monotonic()
    error, answer = None, ""
    try:
        kind = registry.get(notifier.kind)
        answer = kind.send(notifier.config, sealing.unseal(notifier), delivery.payload,
                           timeout=settings.NOTIFIER_TIMEOUT)  # fmt: skip
    except DeliveryError as exc:
        error = exc.message
    except KeyUnavailable as exc:
        error = str(exc)
    except Exception as exc:  # a bug of a kind must not leave the delivery in `sending`
        log.exception("notifier %s (%s): delivery %s failed unexpectedly", notifier.pk, notifier.kind, delivery.pk)
        error = f"{type(exc).__name__}: {exc}"
    now = timezone.now()
    entry = {"at": now.isoformat(), "ok": error is None, "seconds": round(time.monotonic() - started, 3)}
    if error is not None:
        entry["error"] = error
    delivery.history = [*delivery.history, entry][-50:]
    retry = None
    if error is None:
        delivery.state, delivery.answer, delivery.delivered_at, delivery.next_attempt_at = (
            Delivery.State.DELIVERED, answer[:2000], now, None
        )  # fmt: skip
    else:
        delivery.last_error = error[:2000]
        if delivery.attempts < delivery.max_attempts:
            retry = backoff(delivery.attempts)
            delivery.state, delivery.next_attempt_at = Delivery.State.PENDING, now + timedelta(seconds=retry)
        else:
            delivery.state, delivery.next_attempt_at = Delivery.State.FAILED, None
            log.warning("notifier %s: delivery %s failed after %s attempts: %s",
                        notifier, delivery.pk, delivery.attempts, error)  # fmt: skip
    fields = ("state", "answer", "delivered_at", "next_attempt_at", "last_error", "history")
    recorded = Delivery.objects.filter(pk=delivery.pk).update(
        updated_at=now, **{name: getattr(delivery, name) for name in fields}
    )
    return retry if recorded else None  # its notifier deleted meanwhile: nothing left to retry


def deliveries_due(*, now=None) -> list[int]:
    """Beat: the deliveries whose queued attempt was lost. An attempt interrupted in `sending`
    (its worker killed) counts as failed; a pending one long past its time is due again.
    Finished deliveries older than KEPT_FOR are pruned on the way."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.NOTIFIER_TIMEOUT + LOST_AFTER)
    for delivery in Delivery.objects.filter(state=Delivery.State.SENDING, updated_at__lt=stale):
        error = "the attempt was interrupted (its worker stopped)"
        last = delivery.attempts >= delivery.max_attempts
        Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.SENDING).update(
            state=Delivery.State.FAILED if last else Delivery.State.PENDING,
            next_attempt_at=None if last else now, last_error=error, updated_at=now,
        )  # fmt: skip
    Delivery.objects.filter(
        state__in=(Delivery.State.DELIVERED, Delivery.State.FAILED), updated_at__lt=now - KEPT_FOR
    ).delete()
    late = now - timedelta(seconds=LOST_AFTER)
    due = Delivery.objects.filter(state=Delivery.State.PENDING, next_attempt_at__lt=late)
    return list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:500])
