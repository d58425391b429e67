"""A smoke test of a deployed stack: PUT, GET, the changes feed and DELETE on the real API.

::

    make smoke API_URL=https://abc123.execute-api.eu-west-1.amazonaws.com TOKEN=eyJ...
    python -m devtools.smoke --api-url URL [--profile ID]      # TOKEN from the environment

It writes one item under a fresh asset id (``smoke-<random>``) of one profile, reads it
back (the item, a page filtered to it, the changes feed since a token taken before the
write), deletes it and checks it is gone and reported removed by the feed. The item is
deleted again on the way out whatever failed, so a run leaves only the removal's
tombstone, which the service drops after ``TOMBSTONE_TTL_DAYS``.

The profile is ``--profile``, else the first one the token's ``PROFILE_CLAIM`` claim
(``--profile-claim``, default ``profile_id``) names; the token must be allowed to write
it. Against ``make serve`` a token needs no signature: its payload is used as the claims.

One line per step; exit code 0 when every step passed, 1 at the first that did not (one
line saying what was expected), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

TIMEOUT_SECONDS: Final = 15.0
_OPENER = urllib.request.build_opener()


class SmokeFailure(Exception):
    """A step's answer was not the expected one (or there was no answer)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def token_profile(token: str, claim: str) -> str | None:
    """The first profile the JWT's ``claim`` names (payload read without verifying it)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    value = payload.get(claim) if isinstance(payload, dict) else None
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    return str(value).split()[0] if value else None


class Api:
    """The HTTP API at ``base`` with a bearer token (urllib: no dependency to install)."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> Reply:
        data = json.dumps(body).encode() if body is not None else None
        # the scheme is checked in main (http or https only)
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(request, timeout=TIMEOUT_SECONDS) as response:
                status, headers, raw = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            status, headers, raw = exc.code, dict(exc.headers), exc.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SmokeFailure(f"{method} {self.base}{path}: no answer ({reason})") from None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Reply(status, {k.lower(): v for k, v in headers.items()}, parsed)


def _expect(reply: Reply, status: int, what: str) -> Reply:
    if reply.status != status:
        raise SmokeFailure(f"{what}: expected {status}, got {reply.status}: {reply.body}")
    return reply


def run(api: Api, profile: str, say: Callable[[str], None]) -> None:
    """The steps; raises ``SmokeFailure`` at the first unexpected answer."""
    asset = f"smoke-{uuid.uuid4().hex[:12]}"
    history = f"/profiles/{quote(profile, safe='')}/history"
    item = f"{history}/{asset}"
    written = False

    def step(method: str, path: str, status: int, what: str, body: Any = None) -> Reply:
        started = time.monotonic()
        reply = _expect(api.call(method, path, body), status, f"{what} ({method} {path})")
        say(f"ok  {what}: {method} {path} -> {reply.status} ({time.monotonic() - started:.2f}s)")
        return reply

    before = step("GET", f"{history}/changes", 200, "changes feed, first sync")
    try:
        written = True
        put = step("PUT", item, 200, "write one item", {"position": 600, "duration": 5400})
        if put.headers.get("x-update-outcome") != "applied":
            raise SmokeFailure(
                f"PUT {item}: X-Update-Outcome {put.headers.get('x-update-outcome')}"
            )
        got = step("GET", item, 200, "read it back").body
        if got.get("assetId") != asset or got.get("position") != 600:
            raise SmokeFailure(f"GET {item}: another item came back: {got}")
        page = step("GET", f"{history}?{urlencode({'assetId': asset})}", 200, "page").body
        if [i.get("assetId") for i in page.get("items", [])] != [asset]:
            raise SmokeFailure(f"GET {history}?assetId={asset}: not the one item: {page}")
        since = urlencode({"since": before.body["nextToken"]})
        changes = step("GET", f"{history}/changes?{since}", 200, "changes since the write").body
        if asset not in [i.get("assetId") for i in changes.get("items", [])]:
            raise SmokeFailure(f"the changes feed does not list {asset}: {changes}")
        step("DELETE", item, 204, "delete it")
        written = False
        step("GET", item, 404, "gone")
        since = urlencode({"since": changes["nextToken"]})
        removed = step("GET", f"{history}/changes?{since}", 200, "removal in the feed").body
        if asset not in removed.get("removed", []):
            raise SmokeFailure(f"the changes feed does not report {asset} removed: {removed}")
    finally:
        if written:  # clean up whatever failed in between
            api.call("DELETE", item)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.smoke",
        description="PUT, GET, the changes feed and DELETE against a deployed HTTP API "
        "(make smoke API_URL=... TOKEN=...); cleans up after itself.",
    )
    parser.add_argument(
        "--api-url", default=os.environ.get("API_URL"), help="the stack's HttpApiUrl (API_URL)"
    )
    parser.add_argument(
        "--profile", help="profile to write (default: the first the token's claim names)"
    )
    parser.add_argument("--profile-claim", default="profile_id", help="the PROFILE_CLAIM claim")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; the exit code. The token is read from TOKEN, never an argument."""
    parser = _parser()
    args = parser.parse_args(argv)
    token = os.environ.get("TOKEN", "")
    if not args.api_url or not token:
        parser.error("set API_URL (or --api-url) and TOKEN: make smoke API_URL=... TOKEN=...")
    if not args.api_url.startswith(("https://", "http://")):
        parser.error(f"API_URL must be an http(s) URL, not {args.api_url!r}")
    profile = args.profile or token_profile(token, args.profile_claim)
    if not profile:
        parser.error(f"the token names no profile in {args.profile_claim!r}: pass --profile")
    try:
        run(Api(args.api_url, token), profile, print)
    except SmokeFailure as exc:
        print(f"FAILED {exc}", file=sys.stderr)
        return 1
    print(f"smoke test passed against {args.api_url} (profile {profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
