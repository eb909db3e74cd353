"""Networks: IPAM's address pools (platform), tenant networks, each node's slice of a network,
and the addresses of containers. IPAM (networking/ipam.py) is the only writer of addresses;
every allocation is unique by a database constraint, whatever the interleaving of writers."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from hivemind.core.models import TenantOwned


class IPPool(models.Model):
    """A block of addresses (staff) from which networks get their prefixes."""

    class Family(models.IntegerChoices):
        IPV4 = 4, "IPv4"
        IPV6 = 6, "IPv6"

    class Purpose(models.TextChoices):
        NETWORKS = "networks", "network prefixes"
        SERVICES = "services", "service virtual addresses"

    name = models.CharField(max_length=63, unique=True, help_text="a DNS label")
    family = models.PositiveSmallIntegerField(choices=Family.choices)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.NETWORKS)
    cidr = models.CharField(max_length=64, unique=True, help_text="e.g. 10.128.0.0/12 or fd12:3456:789a::/48")
    default_prefix = models.PositiveSmallIntegerField(help_text="prefix length a network gets unless it asks (24 / 64)")
    is_default = models.BooleanField(default=False, help_text="networks of this family come from here by default")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["family", "name"]
        verbose_name = "IP pool"
        constraints = [
            models.UniqueConstraint(
                fields=["family"], condition=models.Q(is_default=True), name="ip_pool_one_default_per_family"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.cidr})"


class Network(TenantOwned):
    """A tenant's network: one L2 segment over every node that runs a member (VXLAN), dual
    stack unless asked otherwise. Its VNI and prefixes never change while it exists."""

    class Status(models.TextChoices):
        READY = "ready"
        DELETING = "deleting"

    # Every tenant has its default network: it goes with the tenant rather than block its deletion.
    blocks_tenant_deletion = {"is_default": False}

    name = models.CharField(max_length=63, help_text="a DNS label, unique in the tenant")
    is_default = models.BooleanField(default=False, help_text="apps that name no network join this one")
    vni = models.PositiveIntegerField(unique=True, null=True, blank=True, help_text="VXLAN network identifier")
    pool4 = models.ForeignKey(IPPool, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    pool6 = models.ForeignKey(IPPool, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    subnet4 = models.CharField(max_length=64, null=True, blank=True, unique=True, help_text="IPv4 prefix, or none")
    subnet6 = models.CharField(max_length=64, null=True, blank=True, unique=True, help_text="IPv6 prefix, or none")
    default_deny = models.BooleanField(
        default=False, help_text="ingress to its members only where a network policy allows it"
    )
    labels = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    reservation = models.ForeignKey(
        "tenants.QuotaReservation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="network_name_unique_in_tenant"),
            models.UniqueConstraint(
                fields=["tenant"], condition=models.Q(is_default=True), name="network_one_default_per_tenant"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def ipv4(self) -> bool:
        return bool(self.subnet4)

    @property
    def ipv6(self) -> bool:
        return bool(self.subnet6)


class NodeRange(models.Model):
    """A node's slice of a network: the addresses Docker's IPAM may give containers there, and
    the node's own gateway address. Slots never overlap (unique per network)."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="node_ranges")
    node = models.ForeignKey("nodes.Node", on_delete=models.CASCADE, related_name="network_ranges")
    slot = models.PositiveIntegerField(help_text="index of the slice within the network's prefixes")
    range4 = models.CharField(max_length=64, blank=True)
    range6 = models.CharField(max_length=64, blank=True)
    gateway4 = models.CharField(max_length=64, blank=True)
    gateway6 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["network", "slot"]
        constraints = [
            models.UniqueConstraint(fields=["network", "node"], name="node_range_one_per_node"),
            models.UniqueConstraint(fields=["network", "slot"], name="node_range_unique_slot"),
        ]

    def __str__(self) -> str:
        return f"{self.network} on {self.node}: {self.range4 or ''} {self.range6 or ''}".strip()


class Address(models.Model):
    """A container's addresses on one network, as its node's Docker gave them from the node's range."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="addresses")
    container = models.ForeignKey("applications.Container", on_delete=models.CASCADE, related_name="addresses")
    node = models.ForeignKey("nodes.Node", null=True, on_delete=models.SET_NULL, related_name="+")
    ipv4 = models.GenericIPAddressField(protocol="IPv4", null=True, blank=True)
    ipv6 = models.GenericIPAddressField(protocol="IPv6", null=True, blank=True)

    class Meta:
        ordering = ["network", "ipv4"]
        constraints = [
            models.UniqueConstraint(fields=["network", "container"], name="address_one_per_container"),
            models.UniqueConstraint(fields=["network", "ipv4"], name="address_unique_ipv4"),
            models.UniqueConstraint(fields=["network", "ipv6"], name="address_unique_ipv6"),
        ]

    def __str__(self) -> str:
        return " ".join(a for a in (self.ipv4, self.ipv6) if a)


class NetworkPolicy(TenantOwned):
    """Which traffic reaches (ingress) or leaves (egress) the selected apps' replicas, as
    Kubernetes' NetworkPolicy: once an app is selected by a policy with ingress (or egress)
    rules, only what some policy allows gets through in that direction. The normal form of
    `spec` is networking/policies.py's."""

    name = models.CharField(max_length=63, help_text="a DNS label, unique in the tenant")
    spec = models.JSONField(help_text="apps, ingress and egress rules (networking/policies.py)")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        verbose_name = "network policy"
        verbose_name_plural = "network policies"
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="network_policy_name_unique")]

    def __str__(self) -> str:
        return self.name


class ServiceAddress(models.Model):
    """An app's stable virtual addresses (one per family): connections to them are spread over
    its healthy replicas on every node (nftables DNAT, networking/nft.py). Allocated from the
    service pools when the app has ports; kept for the app's life."""

    app = models.OneToOneField("applications.App", on_delete=models.CASCADE, related_name="service_address")
    ipv4 = models.GenericIPAddressField(protocol="IPv4", null=True, blank=True, unique=True)
    ipv6 = models.GenericIPAddressField(protocol="IPv6", null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["app"]

    def __str__(self) -> str:
        return " ".join(a for a in (self.ipv4, self.ipv6) if a)


class NodeTraffic(models.Model):
    """What a node's agent last read of its network figures (nftables counters, its DNS server's
    stats), for /metrics: kept in the database so every web process reports every node."""

    node = models.OneToOneField("nodes.Node", on_delete=models.CASCADE, related_name="traffic")
    counters = models.JSONField(default=dict, help_text="nftables named counter -> [packets, bytes]")
    dns = models.JSONField(default=dict, help_text="the node DNS server's counters")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"traffic of {self.node}"
