"""Storage providers, volumes, snapshots, clones, encryption and replication."""
