"""What the backups API's views share: how a store's or repository's failure is answered, and
a verify request (the policy's and the backup's)."""

from __future__ import annotations

from rest_framework import exceptions, serializers

from backups.api.views import LocationError
from backups.repository import DamagedObject, WrongKey
from backups.stores import StoreError
from hivemind.core.api import StrictFieldsMixin


def repository_answer(exc: Exception) -> exceptions.APIException:
    """A location's or repository's failure as the API answers it (its own message)."""
    if isinstance(exc, StoreError | DamagedObject | WrongKey):
        return LocationError(str(exc))
    return exceptions.NotFound(str(exc))  # a path, or a snapshot, the repository does not hold


class VerifyRequestSerializer(StrictFieldsMixin, serializers.Serializer):
    read_data = serializers.BooleanField(required=False, help_text="Download and check every pack.")
    read_percent = serializers.IntegerField(required=False, min_value=0, max_value=100,
                                            help_text="Download and check this share of the packs.")  # fmt: skip


def read_choice(data: dict, *, default):
    """read_data or read_percent of a verify request (not both), else `default`."""
    if "read_data" in data and "read_percent" in data:
        raise exceptions.ValidationError({"read_percent": "give read_data or read_percent, not both"})
    read = data.get("read_data", data.get("read_percent"))
    return default if read is None else read


class VerifyStartedSerializer(serializers.Serializer):
    workflow = serializers.IntegerField()
    location = serializers.CharField()
    read_data = serializers.JSONField(help_text="false, true or a percentage of the packs read.")
