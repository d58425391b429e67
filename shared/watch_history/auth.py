"""Who may touch which profile: the one rule both HTTP APIs apply.

The JWT authorizer of the HTTP API has already checked the token's signature, issuer
and audience; its claims arrive in ``requestContext.authorizer.jwt.claims``. A caller
may read or edit profile P if the claim named by ``PROFILE_CLAIM`` (one id, or a
space-separated list) contains P, or its scopes (the claims' ``scope``/``scp``, or
``requestContext.authorizer.jwt.scopes``) include ``ADMIN_SCOPE``. The check runs before
anything else of the request is validated (``http_api.resolve``): a caller that may not
touch P learns nothing about P's requests but 403.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from watch_history.errors import HistoryError
from watch_history.settings import Settings


class NotAuthenticatedError(HistoryError):
    """No usable claims: the request did not come through the JWT authorizer (401)."""


class ForbiddenError(HistoryError):
    """The claims do not grant this profile (403)."""


def event_authorizer(event: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, Any]:
    """(claims, scopes) of an API Gateway HTTP API event (``requestContext.authorizer.jwt``)."""
    context = event.get("requestContext")
    authorizer = context.get("authorizer") if isinstance(context, Mapping) else None
    jwt = authorizer.get("jwt") if isinstance(authorizer, Mapping) else None
    if not isinstance(jwt, Mapping):
        return None, None
    claims = jwt.get("claims")
    return (claims if isinstance(claims, Mapping) else None), jwt.get("scopes")


def _words(value: Any) -> set[str]:
    if isinstance(value, str):
        # API Gateway renders list claims as "[a b]"; tokens may also send "a b".
        return set(value.strip("[]").replace(",", " ").split())
    if isinstance(value, list | tuple):
        return {str(v) for v in value}
    return set()


def authorize(
    claims: Mapping[str, Any] | None,
    profile_id: str,
    settings: Settings,
    scopes: Any = None,
) -> None:
    """Raise NotAuthenticatedError or ForbiddenError unless ``claims`` grant ``profile_id``.

    ``scopes``: ``requestContext.authorizer.jwt.scopes`` (API Gateway lists the token's
    scopes there); the claims' own ``scope``/``scp`` count as well.
    """
    if not claims:
        raise NotAuthenticatedError("missing token claims")
    granted = _words(claims.get("scope")) | _words(claims.get("scp")) | _words(scopes)
    if settings.admin_scope in granted:
        return
    allowed = _words(claims.get(settings.profile_claim))
    if not allowed and settings.profile_claim not in claims:
        raise NotAuthenticatedError(f"token has no {settings.profile_claim} claim")
    if profile_id not in allowed:
        raise ForbiddenError(f"this token may not access profile {profile_id}")
