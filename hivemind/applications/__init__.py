"""Apps (desired state), replicas and containers (actual state), services and the scheduler."""
