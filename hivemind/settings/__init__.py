"""Hivemind settings: base.py plus one module per integration, all fed by env.CONFIG."""

from .api import *  # noqa: F403
from .base import *  # noqa: F403
from .celery import *  # noqa: F403
from .observability import *  # noqa: F403
