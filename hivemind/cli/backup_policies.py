"""Commands of `hivemind backup` (their owner fills this in)."""
