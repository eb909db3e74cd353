"""Nodes in the Django admin: what the agents report (read-only), labels and taints shown, and
cordon, uncordon, drain and remove as actions that go through the services."""

from __future__ import annotations

from django.contrib import admin, messages
from django.template.defaultfilters import filesizeformat

from hivemind.core.errors import Conflict
from hivemind.nodes import selectors, services
from hivemind.nodes.models import Node


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["name", "node_state", "address", "cpu", "memory", "containers", "label_text", "last_heartbeat"]
    list_filter = ["status", "cordoned", "draining", "arch"]
    search_fields = ["name", "address"]
    actions = ["cordon_selected", "uncordon_selected", "drain_selected", "remove_selected"]
    fields = ["name", "node_state", "address", "labels", "taints", "cordoned", "draining", "cpu", "memory",
              "disk", "containers", "docker_version", "docker_host", "os", "arch", "last_heartbeat",
              "registered_at", "updated_at"]  # fmt: skip
    readonly_fields = fields

    def get_queryset(self, request):
        return selectors.nodes_with_allocation(super().get_queryset(request))

    @admin.display(description="state", ordering="status")
    def node_state(self, node: Node) -> str:
        return node.state

    @admin.display(description="CPU (allocated / capacity)")
    def cpu(self, node: Node) -> str:
        return f"{node.allocated_cpu_millis / 1000:g} / {node.cpu_millis / 1000:g} cores"

    @admin.display(description="memory (allocated / capacity)")
    def memory(self, node: Node) -> str:
        return f"{filesizeformat(node.allocated_memory_bytes)} / {filesizeformat(node.memory_bytes)}"

    @admin.display(description="disk free")
    def disk(self, node: Node) -> str:
        return filesizeformat(node.disk_bytes)

    @admin.display(description="containers", ordering="container_count")
    def containers(self, node: Node) -> int:
        return node.container_count

    @admin.display(description="labels")
    def label_text(self, node: Node) -> str:
        return ", ".join(f"{k}={v}" for k, v in (node.labels or {}).items()) or "-"

    def has_add_permission(self, request) -> bool:
        return False  # agents register nodes

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # "Remove selected nodes" goes through node_remove, which refuses busy nodes

    def _apply(self, request, queryset, service, verb: str) -> None:
        done = 0
        for node in queryset:
            try:
                service(node=node, actor=request.user)
                done += 1
            except Conflict as exc:
                self.message_user(request, str(exc.detail), messages.WARNING)
        if done:
            self.message_user(request, f"{verb} {done} node(s)", messages.SUCCESS)

    @admin.action(permissions=["change"], description="Cordon selected nodes (no new replicas)")
    def cordon_selected(self, request, queryset):
        self._apply(request, queryset, services.node_cordon, "cordoned")

    @admin.action(permissions=["change"], description="Uncordon selected nodes (take replicas again, end a drain)")
    def uncordon_selected(self, request, queryset):
        self._apply(request, queryset, services.node_uncordon, "uncordoned")

    @admin.action(permissions=["change"], description="Drain selected nodes (the app reconciler moves their replicas)")
    def drain_selected(self, request, queryset):
        self._apply(request, queryset, services.node_drain, "drained")

    @admin.action(permissions=["change"], description="Remove selected nodes (not ready, or without containers)")
    def remove_selected(self, request, queryset):
        self._apply(request, queryset, services.node_remove, "removed")
