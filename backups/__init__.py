"""Backup locations, policies, the chunk repository, backup/restore workflows and verification."""
