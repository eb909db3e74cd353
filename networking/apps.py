from django.apps import AppConfig


class NetworkingConfig(AppConfig):
    name = "networking"

    def ready(self) -> None:
        """Every saved or deleted replica, address or virtual address is news for the nodes'
        DNS servers and load balancers (networking/discovery.py `changed`). Bulk `update()`s
        do not send signals: their callers announce themselves (the agent's reports)."""
        from django.db.models.signals import post_delete, post_save

        from hivemind.applications.models import Container
        from networking.metrics import NetworkCollector
        from networking.models import Address, ServiceAddress
        from observability import registry as metrics_registry

        metrics_registry.register(NetworkCollector())  # traffic, drops, DNS, load balancers

        for model in (Container, Address, ServiceAddress):
            post_save.connect(_announce, sender=model, dispatch_uid=f"discovery-save-{model.__name__}")
            post_delete.connect(_announce, sender=model, dispatch_uid=f"discovery-delete-{model.__name__}")


def _announce(sender, **kwargs) -> None:
    from networking import discovery

    discovery.changed()
