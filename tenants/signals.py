from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from tenants.models import Membership


@receiver(post_save, sender=Membership)
def _membership_saved(sender, instance: Membership, **kwargs) -> None:
    from tenants.services import role_permissions_sync

    role_permissions_sync(membership=instance)


@receiver(post_delete, sender=Membership)
def _membership_deleted(sender, instance: Membership, **kwargs) -> None:
    from django.contrib.auth import get_user_model

    from tenants.services import role_permissions_sync

    # When the user itself is being deleted, guardian's rows go with it.
    if get_user_model().objects.filter(pk=instance.user_id).exists():
        role_permissions_sync(membership=instance, removed=True)
