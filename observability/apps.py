from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"

    def ready(self) -> None:
        from observability import registry
        from observability.metrics import ContainerCollector, HealthCollector, NodeCollector

        for collector in (NodeCollector(), ContainerCollector(), HealthCollector()):
            registry.register(collector)
