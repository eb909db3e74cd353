#!/usr/bin/env python
"""Django's command-line utility for Hivemind's control plane."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    from django.core.management import execute_from_command_line

    from hivemind.config import ConfigError, exit_on_config_error

    try:
        execute_from_command_line(sys.argv)
    except ConfigError as exc:
        exit_on_config_error(exc)


if __name__ == "__main__":
    main()
