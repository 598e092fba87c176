"""Which hosts are this machine's own: a server may skip API keys on loopback, and a client may
send a placeholder key to a loopback server."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False
