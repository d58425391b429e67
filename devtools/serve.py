"""The read and write APIs on localhost, as API Gateway (HTTP API, payload 2.0) runs them.

``make serve`` (``make serve PORT=8081`` for another port; or ``python -m devtools.serve
[--port 8080] [--host 127.0.0.1]`` with REDIS_URL set): a stdlib HTTP server on the
loopback interface only. A port already in use is a one-line error. Each request
becomes the event API Gateway would send (``version`` 2.0, ``routeKey``, ``rawPath``,
``rawQueryString``, ``queryStringParameters`` with repeated keys joined by commas,
lower-case ``headers``, ``cookies``, ``pathParameters``, ``body`` (base64 when it is
not text), ``requestContext.http``), goes to the real handler in-process (GET: the
reader, PUT, POST and DELETE: the writer; one invocation at a time per function, as one
Lambda container), and the handler's ``statusCode``/``headers``/``body`` come back.
A path that matches none of the routes gets 404 ``{"message":"Not Found"}`` and
a handler that raises gets 500 ``{"message":"Internal Server Error"}``, as from API
Gateway. ``sam local start-api`` needs Docker; this does not.

Development JWT claims
----------------------
In AWS the JWT authorizer checks the token and puts its claims in
``requestContext.authorizer.jwt.claims``. Here, for development only, the claims come
from one of these request headers (not passed on to the handler):

``X-Dev-Claims: {"profile_id": "p1 p2", "scope": "history:admin"}``
    A JSON object: the claims exactly. Values are rendered as API Gateway renders
    them: strings as they are, numbers and booleans as text, lists as ``"[a b]"``.
``X-Dev-Profile: p1``
    Shortcut for ``{"<PROFILE_CLAIM>": "p1"}`` (a space-separated list is allowed).
``Authorization: Bearer <JWT>``
    The token's payload is used as the claims WITHOUT verifying its signature.

Without any of them the event has no authorizer context, and the handlers answer 401
(in AWS, the authorizer would have rejected the request before the Lambda). Claims that
cannot be read (a Bearer token that is not a JWT, X-Dev-Claims that is not a JSON
object) are a 401 here, as a token the authorizer cannot read is in AWS.

CORS
----
``--cors-origins https://app.example.com,http://localhost:3000`` (``make serve
CORS_ORIGINS=...``, the template's ``CorsAllowOrigins`` parameter in AWS): the policy
is the template's ``CorsConfiguration`` (read from template.yaml, its one source), applied
as API Gateway applies it: preflights (OPTIONS with ``Access-Control-Request-Method``)
are answered here without reaching a function, and responses to an allowed ``Origin``
carry ``Access-Control-Allow-Origin`` and ``Access-Control-Expose-Headers``. Without
origins there is no CORS, as in the template. This server also allows its own
development headers (``DEV_HEADERS``), so that a browser app can send them.

Data
----
``--sample-profiles N`` (``make serve SAMPLE_PROFILES=N``, default 1) fills profiles
``demo-00000`` ... with sample history at start-up; PUT and POST (batch) add more.

Examples (``make serve`` prints them with the real port)::

    curl -s '127.0.0.1:8080/profiles/demo-00000/history?status=in_progress' \\
         -H 'X-Dev-Profile: demo-00000'
    curl -s '127.0.0.1:8080/profiles/demo-00000/history?sport=cricket&team=csk&team=mi' \\
         -H 'X-Dev-Claims: {"scope": "history:admin"}'
"""

from __future__ import annotations

import argparse
import base64
import binascii
import ipaddress
import json
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from devtools.heartbeats import history_updates, profile_ids
from devtools.lambda_context import (
    ACCOUNT_ID,
    FakeLambdaContext,
    Handler,
    env_defaults,
    load_handler,
    local_store,
)
from watch_history import runtime
from watch_history.models import ProgressUpdate
from watch_history.settings import Settings

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080

__all__ = [
    "ROUTES",
    "CorsPolicy",
    "LocalApiServer",
    "Route",
    "api_event",
    "dev_claims",
    "main",
    "match_route",
    "template_cors",
]

READER: Final = "history_reader"
WRITER: Final = "history_writer"
MAX_BODY_BYTES: Final = 10 * 1024 * 1024  # API Gateway's payload limit
API_ID: Final = "local"
SAMPLE_PREFIX: Final = "demo"
TEMPLATE: Final = Path(__file__).resolve().parent.parent / "template.yaml"

_TEXT_TYPES = re.compile(
    r"^(text/.*|application/(json|.*\+json|xml|.*\+xml|javascript|x-www-form-urlencoded))$"
)


# --------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One route of the HTTP API and the function behind it."""

    method: str
    template: str  # "/profiles/{profileId}/history"
    function: str  # directory under functions/

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters (decoded) if ``method`` and ``path`` are this route's."""
        if method != self.method:
            return None
        found = _pattern(self.template).fullmatch(path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in found.groupdict().items()}


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts)
    )
    return re.compile(regex)


# In template order. API Gateway picks the most specific route: ".../history/changes"
# before ".../history/{assetId}", as match_route tries them in this order.
ROUTES: Final[tuple[Route, ...]] = (
    Route("GET", "/profiles/{profileId}/history", READER),
    Route("GET", "/profiles/{profileId}/history/changes", READER),
    Route("GET", "/profiles/{profileId}/history/{assetId}", READER),
    Route("PUT", "/profiles/{profileId}/history/{assetId}", WRITER),
    Route("POST", "/profiles/{profileId}/history", WRITER),
    Route("DELETE", "/profiles/{profileId}/history/{assetId}", WRITER),
    Route("POST", "/profiles/{profileId}/history/{assetId}/dismiss", WRITER),
    Route("DELETE", "/profiles/{profileId}/history", WRITER),
)


def match_route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route a request goes to, and its path parameters; None: API Gateway's 404."""
    for route in ROUTES:
        params = route.match(method.upper(), path)
        if params is not None:
            return route, params
    return None


# --------------------------------------------------------------------------------------
# CORS: the template's policy, applied as API Gateway applies it
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """An HTTP API ``CorsConfiguration``: header names lower-case, methods upper-case."""

    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...]
    allow_headers: tuple[str, ...]
    expose_headers: tuple[str, ...]
    max_age: int

    def allows(self, origin: str | None) -> bool:
        return origin is not None and ("*" in self.allow_origins or origin in self.allow_origins)

    def preflight(self, origin: str | None, method: str | None) -> list[tuple[str, str]]:
        """The headers of the 204 answering a preflight (none for a foreign origin or
        method: the browser then refuses the request)."""
        if not self.allows(origin) or (method or "").upper() not in self.allow_methods:
            return []
        assert origin is not None
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Methods", ",".join(self.allow_methods)),
            ("Access-Control-Allow-Headers", ",".join(self.allow_headers)),
            ("Access-Control-Max-Age", str(self.max_age)),
            ("Vary", "Origin"),
        ]

    def response(self, origin: str | None) -> list[tuple[str, str]]:
        """What API Gateway adds to a response to a request from ``origin``."""
        if not self.allows(origin):
            return []
        assert origin is not None
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Expose-Headers", ",".join(self.expose_headers)),
            ("Vary", "Origin"),
        ]


_CORS_HEADERS: Final = frozenset(
    name.lower()
    for name in (
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers",
        "Access-Control-Expose-Headers",
        "Access-Control-Max-Age",
        "Access-Control-Allow-Credentials",
    )
)


def template_cors(origins: str, template: Path = TEMPLATE) -> CorsPolicy | None:
    """The HTTP API's CORS policy in template.yaml, with ``origins`` (the
    ``CorsAllowOrigins`` parameter: comma-separated; empty: no CORS, as in the template),
    and this server's DEV_HEADERS allowed besides the template's headers."""
    allowed = tuple(o.strip() for o in origins.split(",") if o.strip())
    if not allowed:
        return None
    # cfn-lint's loader reads CloudFormation's tags (!If, !Split); imported here, as only
    # a server with CORS needs it (0.7 s to import).
    from cfnlint.decode.cfn_yaml import load as load_cfn_yaml  # type: ignore[import-untyped]  # noqa: PLC0415

    document = load_cfn_yaml(str(template))
    chosen = document["Resources"]["HttpApi"]["Properties"]["CorsConfiguration"]["Fn::If"][1]
    allow_headers = tuple(str(h).lower() for h in chosen["AllowHeaders"])
    return CorsPolicy(
        allow_origins=allowed,
        allow_methods=tuple(str(m).upper() for m in chosen["AllowMethods"]),
        allow_headers=allow_headers + tuple(h for h in DEV_HEADERS if h not in allow_headers),
        expose_headers=tuple(str(h).lower() for h in chosen.get("ExposeHeaders", ())),
        max_age=int(chosen.get("MaxAge", 0)),
    )


# --------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------


def _claim_text(value: Any) -> str:
    """A claim value as API Gateway passes it to the Lambda (always a string)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_claim_text(v) for v in value) + "]"
    return json.dumps(value, separators=(",", ":"))


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return True
    return bool(_TEXT_TYPES.match(content_type.split(";", 1)[0].strip().lower()))


def api_event(
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
    body: bytes | str | None = None,
    claims: Mapping[str, Any] | None = None,
    source_ip: str = "127.0.0.1",
    domain: str = "127.0.0.1",
) -> dict[str, Any]:
    """The API Gateway HTTP API (payload 2.0) event of a request.

    ``target`` is the request target (path and query string, percent-encoded as sent).
    ``claims`` None: no authorizer context (the request carried no token).
    """
    method = method.upper()
    split = urlsplit(target)
    raw_path = split.path or "/"
    raw_query = split.query
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    lowered: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in pairs:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    lowered.setdefault("host", domain)
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value

    matched = match_route(method, raw_path)
    route_key = matched[0].key if matched else "$default"
    now = datetime.now(UTC)
    request_context: dict[str, Any] = {
        "accountId": ACCOUNT_ID,
        "apiId": API_ID,
        "domainName": lowered["host"],
        "domainPrefix": lowered["host"].split(".", 1)[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": lowered.get("user-agent", ""),
        },
        "requestId": uuid.uuid4().hex[:16],
        "routeKey": route_key,
        "stage": "$default",
        "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(now.timestamp() * 1000),
    }
    if claims is not None:
        request_context["authorizer"] = {
            "jwt": {"claims": {k: _claim_text(v) for k, v in claims.items()}, "scopes": None}
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": lowered,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if matched is not None:
        event["pathParameters"] = matched[1]
    event["requestContext"] = request_context
    if body is not None and len(body) > 0:
        if isinstance(body, str):
            event["body"], event["isBase64Encoded"] = body, False
        elif _is_text(lowered.get("content-type")):
            try:
                event["body"], event["isBase64Encoded"] = body.decode("utf-8"), False
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(body).decode("ascii")
                event["isBase64Encoded"] = True
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
    return event


X_DEV_CLAIMS: Final = "x-dev-claims"
X_DEV_PROFILE: Final = "x-dev-profile"
DEV_HEADERS: Final = (X_DEV_CLAIMS, X_DEV_PROFILE)
"""The development claims headers this server reads (and allows in its CORS)."""


class DevClaimsError(ValueError):
    """Development claims (a header or a Bearer token) that cannot be read (401)."""


def dev_claims(headers: Mapping[str, str], profile_claim: str) -> dict[str, Any] | None:
    """The claims of the development headers (see the module docstring), or None.

    ``headers`` keys are lower-case.
    """
    claims: dict[str, Any] | None = None
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        claims = _jwt_payload(auth[7:].strip())
    raw = headers.get(X_DEV_CLAIMS)
    if raw is not None:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DevClaimsError(f"X-Dev-Claims is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise DevClaimsError("X-Dev-Claims must be a JSON object")
        claims = {**(claims or {}), **parsed}
    profile = headers.get(X_DEV_PROFILE)
    if profile is not None:
        claims = {**(claims or {}), profile_claim: profile.strip()}
    return claims


def _jwt_payload(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise DevClaimsError("Authorization: Bearer needs a JWT (header.payload.signature)")
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise DevClaimsError(f"the JWT's payload is not base64url JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise DevClaimsError("the JWT's payload is not a JSON object")
    return payload


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _json_reply(status: HTTPStatus, message: str) -> _Reply:
    body = json.dumps({"message": message}, separators=(",", ":")).encode()
    return _Reply(status.value, [("Content-Type", "application/json")], body)


def _reply_of(response: Any) -> _Reply:
    """What API Gateway makes of a payload 2.0 handler's return value."""
    if not (isinstance(response, dict) and "statusCode" in response):
        # Payload 2.0: a value without statusCode is a 200 JSON body.
        text = response if isinstance(response, str) else json.dumps(response)
        return _Reply(200, [("Content-Type", "application/json")], text.encode())
    headers: list[tuple[str, str]] = [
        (str(k), str(v)) for k, v in (response.get("headers") or {}).items()
    ]
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(v)) for v in values)
    headers.extend(("Set-Cookie", str(c)) for c in response.get("cookies") or ())
    raw = response.get("body")
    if raw is None:
        body = b""
    elif response.get("isBase64Encoded"):
        body = base64.b64decode(raw)
    else:
        body = str(raw).encode()
    return _Reply(int(response["statusCode"]), headers, body)


class LocalApiServer(ThreadingHTTPServer):
    """The local HTTP API: bound (and so ready to accept) once constructed."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handlers: Mapping[str, Handler],
        *,
        profile_claim: str = "profile_id",
        log: Callable[[str], None] | None = None,
        cors: CorsPolicy | None = None,
    ) -> None:
        host = address[0]
        if not _is_loopback(host):
            raise ValueError(f"{host} is not a loopback address: this server trusts dev claims")
        self.handlers = dict(handlers)
        self.profile_claim = profile_claim
        self.cors = cors
        self.log = log
        self._locks = {name: threading.Lock() for name in self.handlers}
        super().__init__(address, _RequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def invoke(self, function: str, event: dict[str, Any]) -> _Reply:
        """Run ``function``'s handler on ``event`` (one at a time per function)."""
        handler = self.handlers.get(function)
        if handler is None:
            return _json_reply(HTTPStatus.NOT_FOUND, "Not Found")
        with self._locks[function]:
            try:
                response = handler(event, FakeLambdaContext(function.replace("_", "-")))
            except Exception:
                traceback.print_exc(file=sys.stderr)
                return _json_reply(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal Server Error")
        try:
            return _reply_of(response)
        except (KeyError, TypeError, ValueError, binascii.Error):
            traceback.print_exc(file=sys.stderr)
            return _json_reply(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal Server Error")


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


class _RequestHandler(BaseHTTPRequestHandler):
    server: LocalApiServer
    protocol_version = "HTTP/1.1"
    server_version = "watch-history-local/1.0"

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def __getattr__(self, name: str) -> Any:
        """Any other method (TRACE, CONNECT, made-up ones) is routed too, and matches no
        route: 404 ``{"message":"Not Found"}`` as from API Gateway, not http.server's 501
        HTML page. (BaseHTTPRequestHandler looks up ``do_<METHOD>``.)"""
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def _handle(self) -> None:
        started = time.perf_counter()
        reply = self._preflight() or self._with_cors(self._reply())
        self._send(reply)
        if self.server.log is not None:
            ms = (time.perf_counter() - started) * 1000
            self.server.log(f"{self.command} {self.path} -> {reply.status} ({ms:.1f} ms)")

    def _with_cors(self, reply: _Reply) -> _Reply:
        """API Gateway's CORS headers replace any the function sent."""
        cors = self.server.cors
        if cors is None:
            return reply
        kept = [(k, v) for k, v in reply.headers if k.lower() not in _CORS_HEADERS]
        return _Reply(reply.status, kept + cors.response(self.headers.get("Origin")), reply.body)

    def _preflight(self) -> _Reply | None:
        """API Gateway answers a preflight itself, before routes and the authorizer."""
        cors = self.server.cors
        asked = self.headers.get("Access-Control-Request-Method")
        if cors is None or self.command != "OPTIONS" or asked is None:
            return None
        self.close_connection = True  # any body it carried is not read
        return _Reply(204, cors.preflight(self.headers.get("Origin"), asked), b"")

    def _reply(self) -> _Reply:
        length_text = self.headers.get("Content-Length")
        try:
            length = int(length_text) if length_text else 0
        except ValueError:
            return _json_reply(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length > MAX_BODY_BYTES or length < 0:
            self.close_connection = True
            return _json_reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request Entity Too Large")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            return _json_reply(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length")
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        matched = match_route(self.command, path)
        if matched is None:
            return _json_reply(HTTPStatus.NOT_FOUND, "Not Found")
        pairs = [(k, v) for k, v in self.headers.items() if not k.lower().startswith("x-dev-")]
        lowered = {k.lower(): v for k, v in self.headers.items()}
        try:
            claims = dev_claims(lowered, self.server.profile_claim)
        except DevClaimsError as exc:  # API Gateway's JWT authorizer: 401, WWW-Authenticate
            reply = _json_reply(HTTPStatus.UNAUTHORIZED, str(exc))
            return _Reply(
                reply.status, [*reply.headers, ("WWW-Authenticate", "Bearer")], reply.body
            )
        host = self.server.server_address[0]
        event = api_event(
            self.command,
            self.path,
            headers=pairs,
            body=body,
            claims=claims,
            source_ip=self.client_address[0],
            domain=f"{host!s}:{self.server.server_address[1]}",
        )
        return self.server.invoke(matched[0].function, event)

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        no_body = reply.status in (204, 304) or 100 <= reply.status < 200
        for name, value in reply.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        if not no_body:
            self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: ``_handle`` logs each request through ``server.log``."""


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def _examples(url: str, profile: str, claim: str) -> str:
    item = f"{url}/profiles/{profile}/history"
    return "\n".join(
        [
            f"  # continue watching (JWT claims from X-Dev-Profile: {claim}={profile})",
            f"  curl -s '{item}?status=in_progress&collapse=show' -H 'X-Dev-Profile: {profile}'",
            "  # a sport + series + teams lookup (repeated keys), with admin claims",
            f"  curl -s '{item}?sport=cricket&series=ipl-2026&team=csk&team=mi' \\",
            """       -H 'X-Dev-Claims: {"scope": "history:admin"}'""",
            "  # record progress (the app's PUT), then remove the title",
            f"  curl -s -X PUT '{item}/movie-the-last-ferry' -H 'X-Dev-Profile: {profile}' \\",
            "       -H 'Content-Type: application/json' \\",
            """       -d '{"position": 1260, "duration": 6420, """
            """"asset": {"type": "movie", "title": "The Last Ferry"}}'""",
            f"  curl -s -X DELETE '{item}/movie-the-last-ferry' -H 'X-Dev-Profile: {profile}' "
            "-o /dev/null -w '%{http_code}\\n'",
            "  # offline catch-up: several updates in one request, an outcome each",
            f"  curl -s -X POST '{item}' -H 'X-Dev-Profile: {profile}' \\",
            "       -H 'Content-Type: application/json' \\",
            """       -d '{"updates": [{"assetId": "house-s01e01", "position": 300}, """
            """{"assetId": "movie-the-last-ferry", "completedAt": "2026-11-01T20:00:00Z"}]}'""",
            "  # sync: everything first, then what changed since (pass nextToken as since)",
            f"  curl -s '{item}/changes' -H 'X-Dev-Profile: {profile}'",
            f"  curl -s '{item}/changes?since=TOKEN' -H 'X-Dev-Profile: {profile}'",
            "  # without claims: 401, as behind the JWT authorizer",
            f"  curl -s -i '{item}'",
        ]
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"loopback address ({DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"
    )
    parser.add_argument(
        "--sample-profiles",
        type=int,
        default=1,
        help=f"profiles {SAMPLE_PREFIX}-00000... to fill with sample history first (default 1)",
    )
    parser.add_argument(
        "--cors-origins",
        default="",
        help="comma-separated origins allowed by CORS (the template's CorsAllowOrigins; "
        "default none: no CORS)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    return parser


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not _is_loopback(args.host):
        print(
            f"serve: {args.host} is not a 127.x address; this server trusts dev claims",
            file=sys.stderr,
        )
        return 2
    # Metrics go to stdout as EMF in Lambda; here they would only bury the request log
    # (POWERTOOLS_METRICS_DISABLED=false in the environment turns them on).
    env = {"POWERTOOLS_METRICS_NAMESPACE": "WatchHistory", "POWERTOOLS_METRICS_DISABLED": "true"}
    with env_defaults(env):
        settings = Settings()
        handlers = {READER: load_handler(READER), WRITER: load_handler(WRITER)}
        try:  # bound first: a port in use stops here, before the store is touched
            server = LocalApiServer(
                (args.host, args.port),
                handlers,
                profile_claim=settings.profile_claim,
                log=None if args.quiet else lambda line: print(line, flush=True),
                cors=template_cors(args.cors_origins),
            )
        except OSError as exc:
            print(
                f"serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc} "
                "(another make serve? make serve PORT=<port> picks another port)",
                file=sys.stderr,
            )
            return 1
        store = local_store(settings)
        runtime.set_store(store)
        try:
            if args.sample_profiles > 0:
                profiles = profile_ids(args.sample_profiles, SAMPLE_PREFIX)
                raw = history_updates(profiles, 12, hero=profiles[0])
                store.record_batch([ProgressUpdate.model_validate(u) for u in raw])
        except BaseException:
            server.server_close()
            runtime.set_store(None)
            store.client.close()
            raise
        old_term = signal.signal(signal.SIGTERM, _stop)
        try:
            mode = "cluster" if settings.redis_cluster else "standalone"
            print(f"Watch history API on {server.url}  (store: {settings.redis_url}, {mode})")
            print(f"routes: {', '.join(r.key for r in ROUTES)}  (reference: openapi.json)")
            cors = server.cors
            print(
                f"CORS: {', '.join(cors.allow_origins)}" if cors else "CORS: off (--cors-origins)"
            )
            if args.sample_profiles > 0:
                print(f"sample history in profiles {SAMPLE_PREFIX}-00000 ...")
            print(_examples(server.url, f"{SAMPLE_PREFIX}-00000", settings.profile_claim))
            print("Ctrl-C to stop", flush=True)
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, old_term)
            server.server_close()
            runtime.set_store(None)
            store.client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
