"""The redis-py client: standalone or cluster, no auth, an ACL user from a secret, or IAM.

Create it once per Lambda container (``runtime.get_store`` does) and reuse it across
invocations: redis-py reconnects on its own, and every reconnect asks the
credential provider again, which is what makes password rotation and IAM tokens work.

Time budget. A Lambda invocation has a few seconds, so every wait here is bounded:

- the Retry policy retries only ``ConnectionError`` (refused, reset, closed: fast), not
  ``TimeoutError``. redis-py nests retries (a command's retry reconnects, and connecting has
  its own retry with the same policy), so with N retries a silent server costs
  (N + 1) ** 2 timeouts: 9 x 2 s with the default settings. Without timeouts in the policy
  the worst case is about one connect timeout plus one socket timeout.
- In cluster mode redis-py uses only the retry *count*: it retries ConnectionError and
  TimeoutError itself, refreshing the topology between attempts, with no retry inside
  the node connections. A silent node costs (N + 1) socket timeouts: 3 x 2 s by default.
- Reading the secret uses a Secrets Manager client with the same connect/read timeouts
  and at most two attempts, instead of botocore's 60 s defaults: the read happens inside
  redis-py's connect.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Callable
from typing import Any, TypeAlias
from urllib.parse import urlencode, urlsplit

import boto3
import botocore.exceptions
import botocore.session
import redis
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import (
    GetParameterError,
    TransformParameterError,
)
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.connection import ConnectionPool
from redis.credentials import CredentialProvider
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from watch_history.errors import ConfigurationError, HistoryError, StoreUnavailableError
from watch_history.settings import Settings

__all__ = [
    "CLIENT_NAME",
    "HEALTH_CHECK_INTERVAL",
    "TOKEN_LIFETIME_SECONDS",
    "TOKEN_REFRESH_AFTER_SECONDS",
    "ClientType",
    "CredentialsConfigurationError",
    "CredentialsUnavailableError",
    "IamAuthTokenProvider",
    "SecretCredentialProvider",
    "client_kwargs",
    "create_client",
    "credential_provider",
    "lambda_retry",
]

ClientType: TypeAlias = redis.Redis | RedisCluster

CLIENT_NAME = "watch-history"
# A connection idle for longer than this is PINGed before its next command, so that one
# dropped while the Lambda was frozen is replaced before a command is sent on it.
HEALTH_CHECK_INTERVAL = 30
RETRIES = 2

# MemoryDB checks an IAM token only when a connection authenticates (AUTH), and accepts
# it for 15 minutes. A token is reused for 10 minutes, so whichever token a (re)connect
# sends has at least 5 minutes left: room for clock skew and for a Lambda frozen between
# reading the token and sending it. An authenticated connection is not affected by the
# token expiring later (MemoryDB ends it after 12 h; redis-py then reconnects).
TOKEN_LIFETIME_SECONDS = 900
TOKEN_REFRESH_AFTER_SECONDS = 600


class CredentialsConfigurationError(ConfigurationError, RedisError):
    """The secret is missing, unreadable or malformed (or no AWS credentials for IAM).

    Also a ``RedisError``: a credential provider runs in the middle of redis-py's connect,
    after the socket is open, and redis-py closes that socket only on a ``RedisError``.
    Any other exception would leave an open, unauthenticated connection in the pool.
    Not a redis ``ConnectionError``, so redis-py does not retry it.
    """


class CredentialsUnavailableError(StoreUnavailableError, RedisError):
    """Secrets Manager could not be reached or failed (network, throttling, 5xx): retry later."""


def lambda_retry() -> Retry:
    """The retry policy of standalone connections (its count is also the cluster's)."""
    # Backoffs of 0.02 s then 0.04 s. Only ConnectionError: see the module docstring.
    return Retry(
        ExponentialBackoff(cap=0.2, base=0.02),
        RETRIES,
        supported_errors=(redis.exceptions.ConnectionError,),
    )


# ---------------------------------------------------------------------------------------
# Credential providers: redis-py calls get_credentials() on every (re)connect, not once,
# so a rotated password or a fresh IAM token is used by the next connection.
# ---------------------------------------------------------------------------------------


class SecretCredentialProvider(CredentialProvider):
    """(username, password) of an ACL user from a Secrets Manager secret.

    The secret is JSON ``{"username": ..., "password": ...}``. Powertools caches it for
    ``max_age`` seconds, so a reconnect reads Secrets Manager at most that often, and a
    rotated password is used by connections opened after the cache expires.
    """

    def __init__(self, secret_id: str, *, max_age: int, secrets: SecretsProvider) -> None:
        self._secret_id = secret_id
        self._max_age = max_age
        self._secrets = secrets

    def get_credentials(self) -> tuple[str, str]:
        try:
            value: object = self._secrets.get(
                self._secret_id, transform="json", max_age=self._max_age
            )
        except TransformParameterError:
            # from None: a JSONDecodeError carries the whole secret text in .doc
            raise CredentialsConfigurationError(
                f"secret {self._secret_id} is not valid JSON"
            ) from None
        except GetParameterError as exc:
            raise _fetch_error(self._secret_id, exc) from exc
        if not isinstance(value, dict):
            raise CredentialsConfigurationError(
                f"secret {self._secret_id} must be a JSON object with username and password"
            )
        username, password = value.get("username"), value.get("password")
        if not (isinstance(username, str) and username):
            raise CredentialsConfigurationError(
                f'secret {self._secret_id} has no "username" string'
            )
        if not (isinstance(password, str) and password):
            raise CredentialsConfigurationError(
                f'secret {self._secret_id} has no "password" string'
            )
        return username, password


def _fetch_error(secret_id: str, exc: GetParameterError) -> HistoryError:
    """Tell a deployment mistake (no such secret, no access) from a passing outage."""
    cause = exc.__context__  # Powertools wraps every SDK error, without `from`
    transient = isinstance(
        cause, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError
    )
    if isinstance(cause, botocore.exceptions.ClientError):
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = cause.response.get("Error", {}).get("Code", "")
        transient = status >= 500 or status == 429 or "Throttl" in code
    if transient:
        return CredentialsUnavailableError(f"cannot read secret {secret_id}: {exc}")
    return CredentialsConfigurationError(f"cannot read secret {secret_id}: {exc}")


class IamAuthTokenProvider(CredentialProvider):
    """(user, token) for MemoryDB IAM authentication.

    The token is a SigV4-presigned ``GET http://{cluster}/?Action=connect&User={user}``
    (service ``memorydb``) without its scheme, sent as the AUTH password. ``clock`` returns
    wall-clock seconds (time.time): a token's validity is wall-clock time, and the clock
    keeps running while a Lambda is frozen.
    """

    def __init__(
        self,
        user: str,
        cluster_name: str,
        region: str,
        *,
        credentials: Credentials | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if credentials is None:
            credentials = botocore.session.get_session().get_credentials()
        if credentials is None:
            raise CredentialsConfigurationError("IAM auth: no AWS credentials found")
        self._user = user
        self._cluster_name = cluster_name
        self._region = region
        self._credentials = credentials
        self._clock = clock
        self._token: str | None = None
        self._issued_at = 0.0

    def get_credentials(self) -> tuple[str, str]:
        return self._user, self.token()

    def token(self) -> str:
        """The cached token, or a new one once the cached one is 10 minutes old."""
        now = self._clock()
        age = now - self._issued_at
        if self._token is None or not 0 <= age < TOKEN_REFRESH_AFTER_SECONDS:
            self._token = self._sign()
            self._issued_at = now
        return self._token

    def _sign(self) -> str:
        query = urlencode({"Action": "connect", "User": self._user})
        request = AWSRequest(method="GET", url=f"http://{self._cluster_name}/?{query}")
        try:
            # Refreshes temporary credentials when they are due (a network call).
            frozen = self._credentials.get_frozen_credentials()
        except botocore.exceptions.BotoCoreError as exc:
            raise CredentialsUnavailableError(
                f"IAM auth: cannot refresh credentials: {exc}"
            ) from exc
        auth = SigV4QueryAuth(frozen, "memorydb", self._region, expires=TOKEN_LIFETIME_SECONDS)
        auth.add_auth(request)
        return str(request.url).removeprefix("http://")


def _secrets_provider(settings: Settings) -> SecretsProvider:
    arn_parts = (settings.redis_secret_arn or "").split(":")
    # A secret ARN names its region; a bare secret name uses the default region.
    region = arn_parts[3] if len(arn_parts) > 3 and arn_parts[0] == "arn" else None
    config = Config(
        connect_timeout=settings.redis_connect_timeout,
        read_timeout=settings.redis_socket_timeout,
        retries={"mode": "standard", "total_max_attempts": 2},
    )
    try:
        client = boto3.session.Session().client("secretsmanager", region_name=region, config=config)
    except botocore.exceptions.NoRegionError as exc:
        raise ConfigurationError(f"no AWS region for Secrets Manager: {exc}") from exc
    return SecretsProvider(boto3_client=client)


def credential_provider(settings: Settings) -> CredentialProvider | None:
    """The provider the settings ask for, or None (no auth, or user:password in the URL)."""
    if settings.redis_secret_arn:
        return SecretCredentialProvider(
            settings.redis_secret_arn,
            max_age=settings.secret_max_age_seconds,
            secrets=_secrets_provider(settings),
        )
    if settings.redis_iam_user:
        if not settings.memorydb_cluster_name:  # Settings validates this; keeps mypy sure
            raise ConfigurationError("REDIS_IAM_USER needs MEMORYDB_CLUSTER_NAME")
        return IamAuthTokenProvider(
            settings.redis_iam_user, settings.memorydb_cluster_name, settings.aws_region
        )
    return None


# ---------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Everything ``create_client`` passes to ``from_url`` besides the URL."""
    provider = credential_provider(settings)
    url = urlsplit(settings.redis_url)
    if provider is not None and (url.username or url.password):
        raise ConfigurationError(
            "REDIS_URL carries credentials and REDIS_SECRET_ARN or REDIS_IAM_USER is set: "
            "use one of them"
        )
    per_connection: dict[str, Any] = {"health_check_interval": HEALTH_CHECK_INTERVAL}
    if settings.redis_url.startswith("rediss://"):
        per_connection["ssl_min_version"] = ssl.TLSVersion.TLSv1_2
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_timeout": settings.redis_socket_timeout,
        "decode_responses": False,  # the store decodes itself
        "client_name": CLIENT_NAME,
        "credential_provider": provider,
        "retry": lambda_retry(),
    }
    if settings.redis_cluster:
        # RedisCluster hands its nodes only the connection options it knows and silently
        # drops the others, ssl_min_version and health_check_interval among them: give
        # those to every node's connection pool instead.
        kwargs["connection_pool_class"] = functools.partial(ConnectionPool, **per_connection)
    else:
        kwargs.update(per_connection)
    return kwargs


def create_client(settings: Settings) -> ClientType:
    """A client for ``settings.redis_url``.

    Standalone: connects lazily, on the first command. Cluster: RedisCluster connects in
    its constructor to discover the topology, so this raises ``StoreUnavailableError``
    when no node answers and ``ConfigurationError`` when the setup is wrong (bad secret,
    or an endpoint that is not in cluster mode).
    """
    kwargs = client_kwargs(settings)
    if not settings.redis_cluster:
        return redis.Redis.from_url(settings.redis_url, **kwargs)
    try:
        return RedisCluster.from_url(settings.redis_url, **kwargs)
    except RedisClusterException as exc:
        raise _cluster_start_error(settings, exc) from exc


def _cluster_start_error(settings: Settings, exc: RedisClusterException) -> HistoryError:
    """RedisCluster wraps whatever its first connections raised: unwrap it."""
    host = urlsplit(settings.redis_url).hostname
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, HistoryError):
            return type(cause)(*cause.args)  # a copy: raising `cause` from exc makes a cycle
        if isinstance(cause, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return StoreUnavailableError(f"cannot reach the cluster at {host}: {cause}")
        cause = cause.__cause__ or cause.__context__
    return ConfigurationError(f"cannot start a cluster client for {host}: {exc}")
