"""Tenants, memberships and roles, quotas and usage, tenant context, guardian permissions."""
