"""The client's IP address, trusting X-Forwarded-For only from configured proxies (such as Kong)."""

from __future__ import annotations

import ipaddress

from fastapi import Request


def client_ip(request: Request) -> str:
    peer = request.client.host if request.client else "0.0.0.0"
    trusted = request.app.state.settings.trusted_proxies
    forwarded = request.headers.get("x-forwarded-for")
    if not forwarded or not _in(peer, trusted):
        return peer
    # Walk right to left past our own proxies; the first untrusted hop is the client.
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _in(hop, trusted):
            return hop
    return peer


def _in(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)
