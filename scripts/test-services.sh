#!/usr/bin/env bash
# Check the services the test suite talks to and start the ones that are down:
# PostgreSQL and Redis as this machine runs them. The suite starts its own private
# dockerd (tests/conftest.py), so a developer's `make run` is never touched.
set -euo pipefail
say() { printf '[test-services] %s\n' "$*"; }

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    say "PostgreSQL is down; starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  else
    say "PostgreSQL does not answer on 127.0.0.1:5432 and pg_ctlcluster is missing (apt-get install postgresql)"
    exit 1
  fi
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
say "PostgreSQL answers"

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  say "Redis is down; starting it"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
  for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
say "Redis answers"
