from django.apps import AppConfig


class NodesConfig(AppConfig):
    name = "hivemind.nodes"
    label = "nodes"
    verbose_name = "Nodes"
