"""Nodes: agent bootstrap, heartbeats and the container runtime (docker SDK)."""
