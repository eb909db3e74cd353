"""The one rule for names that become DNS names, Docker names and queue names (nodes, apps).

Plain Python (no Django): hivemind/config.py checks HIVEMIND_NODE_NAME with it before Django
is set up.
"""

from __future__ import annotations

import re

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DNS_LABEL_RULE = "a DNS label (lower-case letters, digits and '-', at most 63)"


def is_dns_label(value: object) -> bool:
    return isinstance(value, str) and DNS_LABEL.match(value) is not None
