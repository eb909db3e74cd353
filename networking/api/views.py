from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.response import Response

from hivemind.core.api import StaffOnlyMixin, TenantScopedViewSet
from networking import services
from networking.api import serializers as s
from networking.filtersets import NetworkFilterSet, NetworkPolicyFilterSet
from networking.models import IPPool, Network, NetworkPolicy


class NetworkViewSet(TenantScopedViewSet):
    """Tenant networks: one L2 segment across every node that runs a member, dual stack unless
    asked otherwise, isolated from every other network unless a network policy allows. Apps join
    them by name (`networks` in the spec; none named: the tenant's default network)."""

    queryset = Network.objects.select_related("tenant")
    serializer_class = s.NetworkSerializer
    filterset_class = NetworkFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("node_ranges__node")
        return queryset

    def get_serializer_class(self):
        if self.action == "retrieve":
            return s.NetworkDetailSerializer
        return s.NetworkSerializer

    def create_object(self, serializer):
        data = serializer.validated_data
        return services.network_create(
            tenant=data["tenant"], name=data["name"], actor=self.request.user, ipv4=data.get("ipv4", True),
            ipv6=data.get("ipv6", True), prefix4=data.get("prefix4"), prefix6=data.get("prefix6"),
            labels=data.get("labels"), default_deny=data.get("default_deny", False),
        )  # fmt: skip

    @extend_schema(request=s.NetworkUpdateSerializer, responses=s.NetworkSerializer)
    def partial_update(self, request, *args, **kwargs):
        """Labels and default-deny; a network's prefixes and VNI never change."""
        network = self.get_object()
        body = s.NetworkUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        network = services.network_update(network=network, actor=request.user, **body.validated_data)
        return Response(s.NetworkSerializer(network, context=self.get_serializer_context()).data)

    def update(self, request, *args, **kwargs):
        raise exceptions.MethodNotAllowed("PUT", detail="use PATCH with labels or default_deny")

    def delete_object(self, instance) -> None:
        services.network_delete(network=instance, actor=self.request.user)


class IPPoolViewSet(
    StaffOnlyMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The address pools networks take their prefixes from (platform staff only; others get 403
    on the list and on create, and 404 for any one pool). A pool holding a network's prefix
    cannot be deleted."""

    queryset = IPPool.objects.all()
    serializer_class = s.IPPoolSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    staff_only_noun = "IP pools"

    def perform_create(self, serializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.pool_create(
            name=data["name"], cidr=data["cidr"], actor=self.request.user, default_prefix=data.get("default_prefix"),
            is_default=data.get("is_default", False),
        )  # fmt: skip

    @extend_schema(request=s.IPPoolUpdateSerializer, responses=s.IPPoolSerializer)
    def partial_update(self, request, *args, **kwargs):
        """The default prefix length, and whether it is its family's default pool; the prefix never changes."""
        pool = self.get_object()
        body = s.IPPoolUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        pool = services.pool_update(pool=pool, actor=request.user, **body.validated_data)
        return Response(s.IPPoolSerializer(pool).data)

    def update(self, request, *args, **kwargs):
        raise exceptions.MethodNotAllowed("PUT", detail="use PATCH with default_prefix or is_default")

    def destroy(self, request, *args, **kwargs):
        services.pool_delete(pool=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class NetworkPolicyViewSet(TenantScopedViewSet):
    """Network policies, as Kubernetes': once an app is selected by a policy with ingress (egress)
    rules, only the traffic some policy allows reaches (leaves) its replicas, IPv4 and IPv6
    alike. Every node applies the change within a second or two. `warnings` names what the
    policy refers to that does not exist (it then matches nothing for it)."""

    queryset = NetworkPolicy.objects.select_related("tenant")
    serializer_class = s.NetworkPolicySerializer
    filterset_class = NetworkPolicyFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def create_object(self, serializer):
        data = serializer.validated_data
        policy, created = services.policy_apply(
            tenant=data["tenant"], name=data["name"], spec=data["spec"], actor=self.request.user
        )
        if not created:
            raise exceptions.ValidationError({"name": f"a policy named {policy.name} exists; PATCH it"})
        return policy

    @extend_schema(request=s.NetworkPolicyUpdateSerializer, responses=s.NetworkPolicySerializer)
    def partial_update(self, request, *args, **kwargs):
        """Replace the policy's spec."""
        policy = self.get_object()
        body = s.NetworkPolicyUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        policy, _ = services.policy_apply(
            tenant=policy.tenant, name=policy.name, spec=body.validated_data["spec"], actor=request.user
        )
        return Response(s.NetworkPolicySerializer(policy, context=self.get_serializer_context()).data)

    def update(self, request, *args, **kwargs):
        raise exceptions.MethodNotAllowed("PUT", detail="use PATCH with {spec}")

    def delete_object(self, instance) -> None:
        services.policy_delete(policy=instance, actor=self.request.user)
