"""IPAM (IPv4 and IPv6), networks, overlays, network policies, service DNS and load balancing."""
