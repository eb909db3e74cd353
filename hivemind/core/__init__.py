"""Shared bases: tenant-owned models, scoped querysets, base viewsets, health, metrics."""
