"""Hivemind: a multi-tenant container platform for small clusters and edge sites.

Kept light on purpose: the `hivemind` CLI imports this package and must not load the
server's settings. The Celery app is loaded by CoreConfig.ready() in Django processes
and found by `celery -A hivemind` (it looks for hivemind.celery:app).
"""

__version__ = "0.1.0"
