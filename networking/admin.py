"""Networks in the Django admin: read-only (IPAM and the services write them; the API and CLI
create and delete), with each network's node ranges and member addresses."""

from __future__ import annotations

from django.contrib import admin

from networking.models import Address, IPPool, Network, NodeRange


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class NodeRangeInline(admin.TabularInline):
    model = NodeRange
    extra = 0
    can_delete = False
    fields = readonly_fields = ["node", "slot", "range4", "range6", "gateway4", "gateway6"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class AddressInline(admin.TabularInline):
    model = Address
    extra = 0
    can_delete = False
    fields = readonly_fields = ["container", "node", "ipv4", "ipv6"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Network)
class NetworkAdmin(ReadOnlyAdmin):
    list_display = ["name", "tenant", "subnet4", "subnet6", "vni", "is_default", "default_deny", "status"]
    list_filter = ["tenant", "is_default", "default_deny"]
    search_fields = ["name", "subnet4", "subnet6"]
    inlines = [NodeRangeInline, AddressInline]


@admin.register(IPPool)
class IPPoolAdmin(ReadOnlyAdmin):
    list_display = ["name", "family", "cidr", "default_prefix", "is_default"]


@admin.register(Address)
class AddressAdmin(ReadOnlyAdmin):
    list_display = ["container", "network", "node", "ipv4", "ipv6"]
    search_fields = ["ipv4", "ipv6", "container__name"]
