from django.apps import AppConfig


class NodesConfig(AppConfig):
    name = "hivemind.nodes"
    label = "nodes"
    verbose_name = "Nodes"

    def ready(self) -> None:
        from celery.signals import worker_ready, worker_shutdown

        from hivemind.nodes import agent

        # Only a worker that consumes node.<HIVEMIND_NODE_NAME> starts the agent (see agent.py).
        worker_ready.connect(agent.on_worker_ready, dispatch_uid="hivemind.nodes.agent.ready")
        worker_shutdown.connect(agent.on_worker_shutdown, dispatch_uid="hivemind.nodes.agent.shutdown")

        from hivemind.nodes.selectors import node_queue_down
        from hivemind.workflows.registry import queue_check

        queue_check(node_queue_down)  # steps queued for a node that is not ready fail instead of waiting
