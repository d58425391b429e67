"""Who may touch which profile: the one rule both HTTP APIs apply.

The JWT authorizer of the HTTP API has already checked the token's signature, issuer
and audience; its claims arrive in ``requestContext.authorizer.jwt.claims``. A caller
may read or edit profile P if the claim named by ``PROFILE_CLAIM`` (one id, or a
space-separated list) contains P, or its scopes include ``ADMIN_SCOPE``.
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


def _words(value: Any) -> set[str]:
    if isinstance(value, str):
        # API Gateway renders list claims as "[a b]"; tokens may also send "a b".
        return set(value.strip("[]").replace(",", " ").split())
    if isinstance(value, list | tuple):
        return {str(v) for v in value}
    return set()


def authorize(claims: Mapping[str, Any] | None, profile_id: str, settings: Settings) -> None:
    """Raise NotAuthenticatedError or ForbiddenError unless ``claims`` grant ``profile_id``."""
    if not claims:
        raise NotAuthenticatedError("missing token claims")
    scopes = _words(claims.get("scope")) | _words(claims.get("scp"))
    if settings.admin_scope in scopes:
        return
    allowed = _words(claims.get(settings.profile_claim))
    if not allowed and settings.profile_claim not in claims:
        raise NotAuthenticatedError(f"token has no {settings.profile_claim} claim")
    if profile_id not in allowed:
        raise ForbiddenError(f"this token may not access profile {profile_id}")
