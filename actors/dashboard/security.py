"""Who may look at a run and who may stop it: a dashboard with a stop button on a training box is
a way in, so it is closed by default.

* **Token** (Jupyter's way): a random token is printed at start; ``?token=…`` once sets an
  HttpOnly, SameSite=Strict cookie and redirects to the same page without it; an
  ``Authorization: Bearer …`` header works too (scripts, Prometheus). Everything but the
  refusal itself needs one; the event stream is authenticated by the cookie.
* **Host and Origin** are checked against the names this server answers to (loopback, the
  bound address, and ``--allow-host`` names): a page on another site that rebinds its DNS to
  127.0.0.1 sends its own name as ``Host`` and is refused; a cross-site request carries a
  foreign ``Origin`` and is refused.
* **Control endpoints** (stop) also need ``X-CSRF-Token``, a value derived from the token that
  only the dashboard's own page can read (from an authenticated JSON response).

Imports the standard library and aiohttp only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

COOKIE = "smart_tuner_token"
CSRF_HEADER = "X-CSRF-Token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _host_name(value: str) -> str:
    """``Host`` header or URL netloc without the port (IPv6 brackets removed), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    token: str
    allowed_hosts: frozenset[str] = field(default_factory=lambda: frozenset(LOOPBACK_NAMES))
    base_url: str = "/"

    @classmethod
    def build(cls, token: str, bind_host: str, extra_hosts: Iterable[str] = (), base_url: str = "/") -> Access:
        hosts = set(LOOPBACK_NAMES) | {_host_name(h) for h in extra_hosts if h}
        if bind_host not in ("0.0.0.0", "::", ""):
            hosts.add(_host_name(bind_host if ":" not in bind_host else f"[{bind_host}]"))
        base = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
        return cls(token=token, allowed_hosts=frozenset(hosts), base_url=base)

    @property
    def csrf(self) -> str:
        return hmac.new(self.token.encode(), b"smart-tuner-dashboard-csrf", hashlib.sha256).hexdigest()[:32]

    def token_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(str(value), self.token)

    def host_ok(self, host_header: str | None) -> bool:
        return bool(host_header) and _host_name(host_header or "") in self.allowed_hosts

    def origin_ok(self, origin: str | None) -> bool:
        if origin is None:
            return True  # same-origin GETs and non-browser clients send none
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and _host_name(parts.netloc) in self.allowed_hosts

    def authenticated(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer " and self.token_ok(auth[7:].strip()):
            return True
        return self.token_ok(request.cookies.get(COOKIE))


def refuse(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def middleware(access: Access) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not access.host_ok(request.headers.get("Host")):
            return refuse(403, "this dashboard does not answer to that Host (add it with --allow-host)")
        if not access.origin_ok(request.headers.get("Origin")):
            return refuse(403, "cross-origin request refused")
        given = request.query.get("token")
        if given is not None:
            if not access.token_ok(given):
                return refuse(403, "wrong token")
            query = {k: v for k, v in request.query.items() if k != "token"}
            target = request.rel_url.with_query(query) if query else request.rel_url.with_query(None)
            moved = web.Response(status=302, headers={"Location": str(target)})
            moved.set_cookie(COOKIE, access.token, httponly=True, samesite="Strict", path=access.base_url)
            return moved
        if not access.authenticated(request):
            return refuse(401, "open the address with the ?token=… printed when the dashboard started")
        if request.method not in ("GET", "HEAD", "OPTIONS") and not hmac.compare_digest(
            request.headers.get(CSRF_HEADER, ""), access.csrf
        ):
            return refuse(403, f"a control request needs the {CSRF_HEADER} header the dashboard's page sends")
        response = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'",
        )
        return response

    return guard
