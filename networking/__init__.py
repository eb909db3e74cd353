"""Tenant networks: IPAM, the VXLAN overlay, nftables rules, service DNS and load balancing."""

import pyroute2.config

# pyroute2 opens a netlink socket in another network namespace from a forked helper process
# and stops it with SIGTERM. In a Celery worker that fork inherits Celery's SIGTERM handler,
# which then shuts down the worker's pool from inside the helper: the agent's replicas' steps
# died as "WorkerLostError: signal 15". The helper gets the default handlers instead.
pyroute2.config.disable_mp_signal = True
