"""What `tunelab ui` refuses before any route runs: requests another web site makes a browser send it. The page can
start processes and has no login, so

    Host       every request's Host must name this server: a loopback name or address (localhost, 127.0.0.1, ::1),
               the address given to --host, or — bound to every interface (0.0.0.0, ::) — an IP address or this
               machine's name (short and full), or a name given with --allow-host (a DNS alias, a reverse proxy's
               public name). A DNS-rebinding page (evil.example resolved to 127.0.0.1) sends its own name: 403.
    Origin     a request that changes something (POST ...) whose Origin is not this server's own (scheme, host,
               port) nor a --allow-host name (a reverse proxy's pages, served as https://NAME), or whose
               Sec-Fetch-Site is cross-site / same-site: 403 (a form or fetch of another site).
               The pages' own forms and fetches send this server's origin and `same-origin`; curl sends neither.
    JSON       a POST to /api/ must say `Content-Type: application/json`: a cross-site page can send text/plain
               without asking the server first, never application/json (415).

Each refusal is one line in the error shape of tunelab/http_errors.py. An ASGI middleware; imports no torch."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from tunelab.http_errors import error

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
WILDCARDS = ("", "0.0.0.0", "::")  # --host values that bind every interface
DEFAULT_PORTS = {"http": 80, "https": 443}


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def _name(host: str | None) -> str:
    """A host name as compared: no brackets (`[::1]`), no trailing dot, lower case."""
    return (host or "").strip().strip("[]").rstrip(".").lower()


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header's (name in lower case, port); None where it is not one (empty, a bad port)."""
    try:
        parts = urlsplit(f"//{value.strip()}")
        return _name(parts.hostname), parts.port
    except ValueError:
        return None


def _origin_name(origin: str) -> str:
    """An Origin header's host name, in lower case ("" where it has none)."""
    try:
        return _name(urlsplit(origin.strip()).hostname)
    except ValueError:
        return ""


class Guard:
    """The middleware: `Guard(app, host, allow)` with `host` the address the server was bound to (--host) and
    `allow` the other names its pages may be opened by (--allow-host)."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", allow: tuple[str, ...] = ()) -> None:
        self.app = app
        bound = _name(host)
        self.allowed = {_name(name) for name in allow if name.strip()}
        self.names = {"localhost", *self.allowed}
        self.any_ip = bound in WILDCARDS
        if self.any_ip:  # bound to every interface: the machine's own names too (an IP address cannot be rebound)
            for machine in {socket.gethostname().lower(), socket.getfqdn().lower()}:
                self.names |= {machine, machine.split(".")[0], f"{machine.split('.')[0]}.local"}
        elif (ip := _ip(bound)) is not None:
            self.names.add(str(ip))
        else:
            self.names.add(bound)

    def host_allowed(self, name: str) -> bool:
        ip = _ip(name)
        if ip is not None:
            return ip.is_loopback or self.any_ip or str(ip) in self.names
        return name in self.names or name.endswith(".localhost")  # *.localhost resolves to loopback (RFC 6761)

    def problem(self, scope: Scope) -> tuple[int, str] | None:
        """(status, one line) for a request refused, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = split_host(headers.get("host", ""))
        if host is None or not host[0] or not self.host_allowed(host[0]):
            shown = headers.get("host", "")[:100]
            return 403, (f"refused: Host {shown!r} is not this server's name (a loopback address or --host): "
                         "open the UI at http://127.0.0.1:PORT/ or the address it was started on")
        if scope.get("method", "GET") in SAFE_METHODS:
            return None
        site = headers.get("sec-fetch-site", "").strip().lower()
        origin = headers.get("origin")
        if site in ("cross-site", "same-site") or (origin is not None and not self.own(origin, scope, host)
                                    and _origin_name(origin) not in self.allowed):
            return 403, (f"refused: a {scope.get('method')} from another site (Origin {(origin or '')[:100]!r}, "
                         f"Sec-Fetch-Site {site or 'not sent'}); this UI takes changes from its own pages only")
        if scope.get("path", "").startswith("/api/"):
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return 415, (f"Content-Type must be application/json, not {kind[:60] or 'none'!r} (send the body "
                             "with -H 'Content-Type: application/json')")
        return None

    @staticmethod
    def own(origin: str, scope: Scope, host: tuple[str, int | None]) -> bool:
        """Whether an Origin header is this server's: the scheme, name and port the request was sent to."""
        scheme = scope.get("scheme", "http")
        try:
            parts = urlsplit(origin.strip())
            port = parts.port
        except ValueError:
            return False
        if parts.scheme != scheme or _name(parts.hostname) != host[0]:
            return False
        return (port or DEFAULT_PORTS.get(scheme)) == (host[1] or DEFAULT_PORTS.get(scheme))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (found := self.problem(scope)) is not None:
            await error(*found)(scope, receive, send)  # (a response is an ASGI app)
            return
        await self.app(scope, receive, send)
