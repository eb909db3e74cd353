from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from hivemind.core.api import StaffOnlyMixin, TenantScopedViewSet
from storage import replication, services
from storage.api import serializers as s
from storage.filtersets import SnapshotFilterSet, VolumeFilterSet
from storage.models import Snapshot, StoragePool, Volume, VolumeReplica


def _started(workflow, **extra) -> Response:
    body = {"workflow": workflow.pk, "url": f"/api/v1/workflows/{workflow.pk}/", **extra}
    return Response(body, status=status.HTTP_202_ACCEPTED)


class VolumeViewSet(TenantScopedViewSet):
    """Tenant volumes: a size in a storage pool, kept across replicas' lives. Apps mount them by
    name (`volumes: [{volume, path, read_only}]` in the spec); a replica runs on the node that
    holds its node-local volumes. Changes answer 202 with the workflow that makes them."""

    queryset = Volume.objects.select_related("tenant", "pool__node", "source__volume")
    serializer_class = s.VolumeSerializer
    filterset_class = VolumeFilterSet
    http_method_names = ["get", "post", "delete", "head", "options"]

    def create(self, request, *args, **kwargs):
        """Create a volume (202: its workflow makes it in the pool; status becomes ready)."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        self._check_add(data["tenant"])
        volume = services.volume_create(
            tenant=data["tenant"], name=data["name"], size=data["size"], actor=request.user,
            pool=(data.get("pool") or {}).get("name"), access_mode=data.get("access_mode", Volume.AccessMode.RWO),
            encrypted=data.get("encrypted", False), labels=data.get("labels"),
        )  # fmt: skip
        body = s.VolumeSerializer(volume, context=self.get_serializer_context()).data
        return Response({**body, "workflow": volume.workflow.pk}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={202: None})
    def destroy(self, request, *args, **kwargs):
        """Delete the volume and its snapshots (409 while an app mounts it)."""
        return _started(services.volume_delete(volume=self.get_object(), actor=request.user))

    @extend_schema(request=s.ExpandSerializer, responses={202: None})
    @action(detail=True, methods=["post"], permission_action="change")
    def expand(self, request, pk=None):
        """Give the volume more room (online where the pool's provider can; never smaller)."""
        volume = self.get_object()
        body = s.ExpandSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return _started(services.volume_expand(volume=volume, size=body.validated_data["size"], actor=request.user))

    @extend_schema(request=s.SnapshotRequestSerializer, responses={202: s.SnapshotSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def snapshot(self, request, pk=None):
        """Take a snapshot (the apps using the volume keep running)."""
        volume = self.get_object()
        body = s.SnapshotRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        snapshot = services.snapshot_create(volume=volume, name=body.validated_data["name"], actor=request.user)
        data = s.SnapshotSerializer(snapshot, context=self.get_serializer_context()).data
        return Response({**data, "workflow": snapshot.workflow.pk}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=s.ScheduleSerializer, responses=s.VolumeSerializer)
    @action(detail=True, methods=["post"], permission_action="change", url_path="snapshot-schedule")
    def snapshot_schedule(self, request, pk=None):
        """Take snapshots every `every` and keep the newest `keep` of them (`every: off` stops it)."""
        from storage import schedules

        volume = self.get_object()
        body = s.ScheduleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        schedules.schedule_set(
            volume=volume, every=body.validated_data["every"], keep=body.validated_data["keep"], actor=request.user
        )
        return Response(s.VolumeSerializer(volume, context=self.get_serializer_context()).data)

    def _snapshot(self, volume: Volume, name: str) -> Snapshot:
        found = volume.snapshots.filter(name=name).first()
        if found is None:
            raise exceptions.ValidationError({"snapshot": f"volume {volume.name} has no snapshot named {name!r}"})
        return found

    @extend_schema(request=s.RevertSerializer, responses={202: None})
    @action(detail=True, methods=["post"], permission_action="change")
    def revert(self, request, pk=None):
        """Revert to a snapshot: the replicas using the volume stop, it is reverted, they start again."""
        volume = self.get_object()
        body = s.RevertSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        snapshot = self._snapshot(volume, body.validated_data["snapshot"])
        return _started(services.volume_revert(volume=volume, snapshot=snapshot, actor=request.user))

    @extend_schema(request=s.CloneSerializer, responses={202: s.VolumeSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def clone(self, request, pk=None):
        """A new volume with one of this volume's snapshots' contents, independent of it."""
        volume = self.get_object()
        body = s.CloneSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        self._check_add(volume.tenant)
        snapshot = self._snapshot(volume, body.validated_data["snapshot"])
        clone = services.volume_clone(
            snapshot=snapshot, name=body.validated_data["name"], actor=request.user,
            labels=body.validated_data.get("labels"),
        )  # fmt: skip
        data = s.VolumeSerializer(clone, context=self.get_serializer_context()).data
        return Response({**data, "workflow": clone.workflow.pk}, status=status.HTTP_202_ACCEPTED)

    # --- replication (storage/replication.py) ---------------------------------------------------

    def required_action(self) -> str:
        if self.action == "replica_delete":
            return "change"
        return super().required_action()

    def _replica_body(self, volume: Volume) -> dict:
        replica = VolumeReplica.objects.select_related("pool__node").filter(volume=volume).first()
        return s.VolumeReplicaSerializer(replica).data if replica is not None else None

    @extend_schema(request=s.ReplicateSerializer, responses={202: s.VolumeReplicaSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def replicate(self, request, pk=None):
        """Keep a copy of the volume in a pool on another node, shipped now and every `interval`
        seconds (incremental snapshot streams between the nodes' agents); again: ship one now."""
        volume = self.get_object()
        body = s.ReplicateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        _replica, workflow = replication.replica_set(
            volume=volume, pool=data["pool"], interval=data.get("interval"), actor=request.user
        )
        answer = {"replica": self._replica_body(volume), "workflow": workflow.pk if workflow else None}
        if workflow is not None:
            answer["url"] = f"/api/v1/workflows/{workflow.pk}/"
        return Response(answer, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: s.VolumeReplicaSerializer})
    @action(detail=True, methods=["get"], permission_action="view")
    def replica(self, request, pk=None):
        """The volume's replica: where, how old its data is (lag_seconds), the last transfer."""
        volume = self.get_object()
        body = self._replica_body(volume)
        if body is None:
            raise exceptions.NotFound(f"volume {volume.name} has no replica")
        return Response(body)

    @extend_schema(responses={202: None})
    @replica.mapping.delete
    def replica_delete(self, request, pk=None):
        """Stop replicating and delete the copy."""
        return _started(replication.replica_remove(volume=self.get_object(), actor=request.user))

    @extend_schema(request=s.PromoteSerializer, responses={202: None})
    @action(detail=True, methods=["post"], permission_action="change")
    def promote(self, request, pk=None):
        """Make the replica the volume (its data as of the last transfer) and move the apps
        mounting it to the replica's node: after the volume's node is lost (409 while it is
        ready, unless force)."""
        volume = self.get_object()
        body = s.PromoteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        workflow = replication.replica_promote(volume=volume, force=body.validated_data["force"], actor=request.user)
        return _started(workflow)


class SnapshotViewSet(TenantScopedViewSet):
    """Volume snapshots (take one with POST /volumes/{id}/snapshot/; revert or clone from the volume)."""

    queryset = Snapshot.objects.select_related("tenant", "volume")
    serializer_class = s.SnapshotSerializer
    filterset_class = SnapshotFilterSet
    http_method_names = ["get", "delete", "head", "options"]

    @extend_schema(responses={202: None})
    def destroy(self, request, *args, **kwargs):
        """Delete the snapshot (the volumes cloned from it stay)."""
        return _started(services.snapshot_delete(snapshot=self.get_object(), actor=request.user))


class StoragePoolViewSet(
    StaffOnlyMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Storage pools: a provider in a directory of a node (platform staff only; others get 403
    on the list and on create, and 404 for any one pool). A pool holding volumes cannot go."""

    queryset = StoragePool.objects.select_related("node")
    serializer_class = s.StoragePoolSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    staff_only_noun = "storage pools"

    def perform_create(self, serializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.pool_create(
            name=data["name"], provider=data["provider"], node=data["node"]["name"], path=data["path"],
            options=data.get("options"), secrets=data.get("secrets"), is_default=data.get("is_default", False),
            actor=self.request.user,
        )  # fmt: skip

    @extend_schema(request=s.StoragePoolUpdateSerializer, responses=s.StoragePoolSerializer)
    def partial_update(self, request, *args, **kwargs):
        """Whether it is a default pool; provider, node and directory never change."""
        pool = self.get_object()
        body = s.StoragePoolUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        pool = services.pool_update(pool=pool, actor=request.user, **body.validated_data)
        return Response(s.StoragePoolSerializer(pool).data)

    def destroy(self, request, *args, **kwargs):
        services.pool_delete(pool=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
