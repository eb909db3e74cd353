"""The `hivemind` command-line client; it talks to the REST API only."""
