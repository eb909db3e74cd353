"""The notifier kinds: importing this package registers each of them (notifiers/registry.py)."""

from notifiers.kinds import alertmanager, email, slack, webhook  # noqa: F401
