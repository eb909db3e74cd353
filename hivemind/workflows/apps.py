from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "hivemind.workflows"
    label = "workflows"
