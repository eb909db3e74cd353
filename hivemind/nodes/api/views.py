from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from hivemind.core.scoping import is_platform_staff
from hivemind.nodes import selectors, services
from hivemind.nodes.api import serializers as s
from hivemind.nodes.filtersets import NodeFilterSet
from hivemind.nodes.models import Node


class NodePermission(permissions.BasePermission):
    """Nodes belong to the platform: every signed-in user reads them, platform staff change them."""

    message = "only platform staff may change nodes"

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in permissions.SAFE_METHODS or is_platform_staff(request.user)


class NodeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """The machines that run containers, by name, with capacity, what their containers ask for
    (allocated) and what is left (free). Agents register nodes and keep them up to date; every
    signed-in user may read them; platform staff label, taint, cordon, drain and remove them."""

    queryset = Node.objects.all()
    serializer_class = s.NodeSerializer
    filterset_class = NodeFilterSet
    permission_classes = [NodePermission]
    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    def get_queryset(self):
        # An aggregate drops Meta.ordering: name order, explicitly, so pages are stable.
        return selectors.nodes_with_allocation(Node.objects.all()).order_by("name")

    def get_object(self) -> Node:
        name = self.kwargs["name"]
        node = self.get_queryset().filter(name=name).first()
        if node is None:
            raise exceptions.NotFound(f"node {name!r} not found")
        return node

    def _answer(self, node: Node) -> Response:
        fresh = self.get_queryset().get(pk=node.pk)
        return Response(s.NodeSerializer(fresh, context=self.get_serializer_context()).data)

    @extend_schema(request=s.NodeLabelSerializer, responses=s.NodeSerializer)
    @action(detail=True, methods=["post"], serializer_class=s.NodeLabelSerializer)
    def label(self, request: Request, name: str) -> Response:
        """Set and remove labels in one change, e.g. {"set": {"zone": "eu-1"}, "remove": ["old"]}."""
        node = self.get_object()
        body = s.NodeLabelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        node = services.node_label(
            node=node, set_labels=body.validated_data["set"], remove=body.validated_data["remove"], actor=request.user
        )
        return self._answer(node)

    @extend_schema(request=s.NodeTaintSerializer, responses=s.NodeSerializer)
    @action(detail=True, methods=["post"], serializer_class=s.NodeTaintSerializer)
    def taint(self, request: Request, name: str) -> Response:
        """Add and remove taints, e.g. {"add": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}],
        "remove": [{"key": "old"}]}. A taint is one per key and effect."""
        node = self.get_object()
        body = s.NodeTaintSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        node = services.node_taint(
            node=node, add=body.validated_data["add"], remove=body.validated_data["remove"], actor=request.user
        )
        return self._answer(node)

    @extend_schema(request=None, responses=s.NodeSerializer)
    @action(detail=True, methods=["post"])
    def cordon(self, request: Request, name: str) -> Response:
        """Place no new replicas on the node; what runs there keeps running."""
        return self._answer(services.node_cordon(node=self.get_object(), actor=request.user))

    @extend_schema(request=None, responses=s.NodeSerializer)
    @action(detail=True, methods=["post"])
    def uncordon(self, request: Request, name: str) -> Response:
        """Let the node take new replicas again; ends a drain too."""
        return self._answer(services.node_uncordon(node=self.get_object(), actor=request.user))

    @extend_schema(request=None, responses=s.NodeSerializer)
    @action(detail=True, methods=["post"])
    def drain(self, request: Request, name: str) -> Response:
        """Cordon the node and mark it draining. This only sets the two flags and answers at once:
        moving the node's replicas to other nodes is the app reconciler's work, which follows
        the flags; watch `containers` fall to 0 before removing the node."""
        return self._answer(services.node_drain(node=self.get_object(), actor=request.user))

    @extend_schema(
        responses={
            204: None,
            409: OpenApiResponse(description="The node is ready and still has containers; the answer names them."),
        }
    )
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        """Remove a node that is not ready (its agent is stopped) or that has no containers left."""
        services.node_remove(node=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
