"""Tests for watch_history.connection: credentials, client options, real servers.

Secrets Manager is moto's (no network); AWS credentials are fake. The engine tests start
their own servers (they change users and passwords, so they do not share conftest's).
"""

from __future__ import annotations

import hmac
import itertools
import json
import re
import socket
import ssl
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aws_lambda_powertools.utilities.parameters.base as powertools_base
import boto3
import botocore.auth
import pytest
import redis
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import CredentialRetrievalError
from moto import mock_aws
from mypy_boto3_secretsmanager import SecretsManagerClient
from redis.cluster import KWARGS_DISABLED_KEYS, REDIS_ALLOWED_KEYS, RedisCluster
from redis.connection import Connection, SSLConnection

from devtools.engine import Engine, start_cluster, start_standalone
from watch_history.connection import (
    CLIENT_NAME,
    HEALTH_CHECK_INTERVAL,
    ClientType,
    IamAuthTokenProvider,
    SecretCredentialProvider,
    client_kwargs,
    create_client,
    credential_provider,
)
from watch_history.errors import ConfigurationError, StoreUnavailableError
from watch_history.settings import Settings

REGION = "eu-west-1"
PASSWORD = "hunter2-Pa55"  # must never appear in an error
_counter = itertools.count()

pytestmark = pytest.mark.usefixtures("no_redis_env")  # every test builds its own Settings


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and region; no profile, config file or instance metadata."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("POWERTOOLS_PARAMETERS_MAX_AGE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def secretsmanager(aws_env: None) -> Iterator[SecretsManagerClient]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


def new_secret(sm: SecretsManagerClient, value: str) -> str:
    """A moto secret holding ``value``; returns its ARN."""
    name = f"wh-{next(_counter)}"
    return sm.create_secret(Name=name, SecretString=value)["ARN"]


def creds_json(username: str = "app", password: str = PASSWORD) -> str:
    return json.dumps({"username": username, "password": password})


class PowertoolsClock:
    """Moves the clock Powertools' parameter cache reads (``datetime.now()``) forward."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = timedelta()
        clock = self

        class ShiftedDatetime(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> ShiftedDatetime:
                real = datetime.now(tz) + clock.offset
                return cls.fromtimestamp(real.timestamp(), tz)

        monkeypatch.setattr(powertools_base, "datetime", ShiftedDatetime)

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def secret_settings(arn: str, **extra: Any) -> Settings:
    return Settings(redis_secret_arn=arn, **extra)


# --- secret credentials ----------------------------------------------------------------


def test_secret_provider_returns_the_secrets_user_and_password(
    secretsmanager: SecretsManagerClient,
) -> None:
    arn = new_secret(secretsmanager, creds_json("app-user", PASSWORD))
    provider = credential_provider(secret_settings(arn))
    assert isinstance(provider, SecretCredentialProvider)
    assert provider.get_credentials() == ("app-user", PASSWORD)


def test_rotated_secret_is_used_once_the_cached_one_is_older_than_max_age(
    secretsmanager: SecretsManagerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = PowertoolsClock(monkeypatch)
    arn = new_secret(secretsmanager, creds_json(password="old-password"))
    provider = credential_provider(secret_settings(arn, secret_max_age_seconds=300))
    assert provider is not None
    assert provider.get_credentials() == ("app", "old-password")

    secretsmanager.put_secret_value(SecretId=arn, SecretString=creds_json(password="new-one"))
    clock.advance(299)
    assert provider.get_credentials() == ("app", "old-password")  # still cached
    clock.advance(2)
    assert provider.get_credentials() == ("app", "new-one")


def test_max_age_zero_reads_the_secret_on_every_connect(
    secretsmanager: SecretsManagerClient,
) -> None:
    arn = new_secret(secretsmanager, creds_json(password="first"))
    provider = credential_provider(secret_settings(arn, secret_max_age_seconds=0))
    assert provider is not None
    assert provider.get_credentials() == ("app", "first")
    secretsmanager.put_secret_value(SecretId=arn, SecretString=creds_json(password="second"))
    assert provider.get_credentials() == ("app", "second")


@pytest.mark.parametrize(
    "secret",
    [
        f"username=app password={PASSWORD}",
        f'{{"username": "app", "password": "{PASSWORD}"',
        json.dumps(["app", PASSWORD]),
        json.dumps(PASSWORD),
        json.dumps({"username": "app"}),
        json.dumps({"password": PASSWORD}),
        json.dumps({"user": "app", "pass": PASSWORD}),
        json.dumps({"username": 7, "password": PASSWORD}),
        json.dumps({"username": "app", "password": ""}),
        json.dumps({"username": "", "password": PASSWORD}),
    ],
)
def test_malformed_secret_is_a_configuration_error_without_the_password(
    secretsmanager: SecretsManagerClient, secret: str
) -> None:
    arn = new_secret(secretsmanager, secret)
    provider = credential_provider(secret_settings(arn))
    assert provider is not None
    with pytest.raises(ConfigurationError, match=re.escape(arn)) as info:
        provider.get_credentials()
    # Not even the chained exceptions of the traceback show the secret's text.
    assert PASSWORD not in "".join(traceback.format_exception(info.value))
    # A RedisError, so that redis-py closes the socket it was authenticating.
    assert isinstance(info.value, redis.RedisError)
    assert not isinstance(info.value, redis.ConnectionError)  # and does not retry it


def test_missing_secret_is_a_configuration_error(secretsmanager: SecretsManagerClient) -> None:
    arn = new_secret(secretsmanager, creds_json())
    missing = arn.replace("wh-", "gone-")
    provider = credential_provider(secret_settings(missing))
    assert provider is not None
    with pytest.raises(ConfigurationError, match="ResourceNotFound"):
        provider.get_credentials()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_unreachable_secrets_manager_is_store_unavailable(aws_env: None) -> None:
    client = boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
    )
    provider = SecretCredentialProvider(
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:wh",
        max_age=300,
        secrets=SecretsProvider(boto3_client=client),
    )
    with pytest.raises(StoreUnavailableError) as info:
        provider.get_credentials()
    assert not isinstance(info.value, ConfigurationError)
    assert isinstance(info.value, redis.RedisError)


def test_secret_client_uses_the_region_of_the_arn(secretsmanager: SecretsManagerClient) -> None:
    # The default region is eu-west-1; a secret in another region is still found.
    other = boto3.client("secretsmanager", region_name="ap-southeast-2")
    arn = other.create_secret(Name="elsewhere", SecretString=creds_json())["ARN"]
    provider = credential_provider(secret_settings(arn))
    assert provider is not None
    assert provider.get_credentials() == ("app", PASSWORD)


# --- IAM tokens ------------------------------------------------------------------------

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


class FakeClock:
    """Wall-clock seconds for the provider; botocore signs at the same instant."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: float = T0) -> None:
        self.now = start
        monkeypatch.setattr(botocore.auth, "get_current_datetime", self._utc_naive)

    def __call__(self) -> float:
        return self.now

    def _utc_naive(self, remove_tzinfo: bool = True) -> datetime:
        return datetime.fromtimestamp(self.now, UTC).replace(tzinfo=None)


def iam_provider(clock: Callable[[], float], token: str | None = "session-token") -> Any:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token)
    return IamAuthTokenProvider("app-user", "my-cluster", REGION, credentials=creds, clock=clock)


def query_of(token: str) -> dict[str, str]:
    parts = urlsplit(f"http://{token}")
    assert parts.path == "/"
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=True)
    assert all(len(v) == 1 for v in query.values())
    return {k: v[0] for k, v in query.items()}


def test_iam_token_is_a_presigned_memorydb_connect_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = iam_provider(FakeClock(monkeypatch))
    user, token = provider.get_credentials()
    assert user == "app-user"
    assert not token.startswith(("http://", "https://"))
    assert token.startswith("my-cluster/?")
    assert urlsplit(f"http://{token}").netloc == "my-cluster"
    query = query_of(token)
    assert query["Action"] == "connect"
    assert query["User"] == "app-user"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "900"
    assert query["X-Amz-Date"] == "20250301T120000Z"
    assert query["X-Amz-Credential"] == f"AKIDEXAMPLE/20250301/{REGION}/memorydb/aws4_request"
    assert query["X-Amz-SignedHeaders"] == "host"
    assert query["X-Amz-Security-Token"] == "session-token"
    assert re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"])


def sigv4_signature(token: str, secret_key: str) -> str:
    """The signature a SigV4 presigned GET of ``token`` must carry (AWS's algorithm, by hand).

    Independent of botocore: MemoryDB checks the token with this algorithm.
    """
    parts = urlsplit(f"http://{token}")
    query = {k: v for k, v in query_of(token).items() if k != "X-Amz-Signature"}

    def enc(text: str) -> str:
        return quote(text, safe="-_.~")

    canonical_query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(query.items()))
    canonical_request = "\n".join(
        ["GET", "/", canonical_query, f"host:{parts.netloc}", "", "host", sha256(b"").hexdigest()]
    )
    scope = query["X-Amz-Credential"].split("/", 1)[1]
    date, region, service, _ = scope.split("/")
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            query["X-Amz-Date"],
            scope,
            sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret_key}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), "sha256").digest()
    return hmac.new(key, string_to_sign.encode(), "sha256").hexdigest()


@pytest.mark.parametrize("user", ["app-user", "a user+1/é"])
@pytest.mark.parametrize("session_token", [None, "session/token+="])
def test_iam_token_signature_verifies(
    monkeypatch: pytest.MonkeyPatch, user: str, session_token: str | None
) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", session_token)
    provider = IamAuthTokenProvider(
        user, "my-cluster", REGION, credentials=creds, clock=FakeClock(monkeypatch)
    )
    token = provider.token()
    query = query_of(token)
    assert query["User"] == user
    assert query.get("X-Amz-Security-Token") == session_token
    assert query["X-Amz-Signature"] == sigv4_signature(token, "wJalrXUtnFEMI/K7MDENG")
    assert query["X-Amz-Signature"] != sigv4_signature(token, "another-secret-key")


def test_iam_token_is_reused_for_ten_minutes_then_regenerated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(monkeypatch)
    provider = iam_provider(clock)
    first = provider.token()

    clock.now = T0 + 599
    assert provider.token() == first  # still 5+ minutes of validity left
    assert query_of(first)["X-Amz-Date"] == "20250301T120000Z"

    clock.now = T0 + 600
    second = provider.token()
    assert second != first
    assert query_of(second)["X-Amz-Date"] == "20250301T121000Z"

    clock.now = T0 + 600 + 599
    assert provider.token() == second

    clock.now = T0 + 100  # the wall clock stepped back: do not trust the cached age
    assert query_of(provider.token())["X-Amz-Date"] == "20250301T120140Z"


def test_iam_token_signs_with_refreshed_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(monkeypatch)
    creds = Credentials("AKIDFIRST", "secret", None)
    provider = IamAuthTokenProvider("u", "c", REGION, credentials=creds, clock=clock)
    assert query_of(provider.token())["X-Amz-Credential"].startswith("AKIDFIRST/")
    creds.access_key = "AKIDSECOND"  # e.g. temporary credentials renewed
    assert query_of(provider.token())["X-Amz-Credential"].startswith("AKIDFIRST/")  # cached
    clock.now += 600
    assert query_of(provider.token())["X-Amz-Credential"].startswith("AKIDSECOND/")


def test_iam_credentials_that_cannot_refresh_are_store_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Expired(Credentials):
        def get_frozen_credentials(self) -> Any:
            raise CredentialRetrievalError(provider="container-role", error_msg="timed out")

    provider = IamAuthTokenProvider(
        "u", "c", REGION, credentials=Expired("a", "b"), clock=FakeClock(monkeypatch)
    )
    with pytest.raises(StoreUnavailableError, match="timed out") as info:
        provider.get_credentials()
    assert isinstance(info.value, redis.RedisError)  # redis-py closes the socket


def test_iam_settings_build_an_iam_provider_from_the_environment(aws_env: None) -> None:
    settings = Settings(
        redis_url="rediss://clustercfg.my-cluster.memorydb.amazonaws.com:6379",
        redis_iam_user="app-user",
        memorydb_cluster_name="my-cluster",
        aws_region="us-west-2",
    )
    provider = credential_provider(settings)
    assert isinstance(provider, IamAuthTokenProvider)
    user, token = provider.get_credentials()
    assert user == "app-user"
    assert query_of(token)["X-Amz-Credential"].startswith("testing/")
    assert "/us-west-2/memorydb/aws4_request" in query_of(token)["X-Amz-Credential"]


def test_iam_without_aws_credentials_is_a_configuration_error(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    settings = Settings(redis_iam_user="u", memorydb_cluster_name="c")
    with pytest.raises(ConfigurationError, match="no AWS credentials"):
        credential_provider(settings)


# --- client options (nothing connects) -------------------------------------------------


def test_no_auth_means_no_provider_and_url_credentials_pass_through() -> None:
    settings = Settings(redis_url="redis://app:pw@127.0.0.1:6379")
    assert credential_provider(settings) is None
    client = create_client(settings)
    assert isinstance(client, redis.Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("app", "pw")


def test_url_credentials_and_a_secret_together_are_refused(
    secretsmanager: SecretsManagerClient,
) -> None:
    arn = new_secret(secretsmanager, creds_json())
    settings = Settings(redis_url="redis://app:pw@127.0.0.1:6379", redis_secret_arn=arn)
    with pytest.raises(ConfigurationError, match="one of them"):
        create_client(settings)


def test_rediss_standalone_client_uses_tls_1_2_and_lambda_sized_options() -> None:
    settings = Settings(
        redis_url="rediss://master.example.invalid:6380",
        redis_connect_timeout=0.5,
        redis_socket_timeout=1.5,
    )
    client = create_client(settings)  # does not connect: the host does not even resolve
    assert isinstance(client, redis.Redis)
    conn = client.connection_pool.make_connection()
    assert isinstance(conn, SSLConnection)
    assert conn.ssl_min_version == ssl.TLSVersion.TLSv1_2
    assert conn.cert_reqs == ssl.CERT_REQUIRED
    assert conn.check_hostname
    assert (conn.host, conn.port) == ("master.example.invalid", 6380)
    assert conn.socket_connect_timeout == 0.5
    assert conn.socket_timeout == 1.5
    assert conn.health_check_interval == HEALTH_CHECK_INTERVAL
    assert conn.client_name == CLIENT_NAME
    assert conn.encoder.decode_responses is False
    assert conn.retry.get_retries() == 2


def test_redis_scheme_is_plain_tcp() -> None:
    client = create_client(Settings(redis_url="redis://127.0.0.1:6379"))
    assert isinstance(client, redis.Redis)
    conn = client.connection_pool.make_connection()
    assert type(conn) is Connection


def test_cluster_nodes_get_tls_1_2_and_health_checks_despite_rediscluster() -> None:
    """RedisCluster drops connection options it does not know; the pool class restores them."""
    url = "rediss://clustercfg.example.invalid:6379"
    kwargs = client_kwargs(Settings(redis_url=url, redis_cluster=True))
    assert kwargs["retry"].get_retries() == 2
    # What RedisCluster.from_url keeps for its nodes' pools (redis/cluster.py)...
    pool_class = kwargs.pop("connection_pool_class")
    node_kwargs = {
        k: v for k, v in kwargs.items() if k in REDIS_ALLOWED_KEYS and k not in KWARGS_DISABLED_KEYS
    }
    # ...and the pool it then builds for a node (the URL's scheme gives the class).
    pool = pool_class(**node_kwargs, connection_class=SSLConnection, host="10.0.0.7", port=6379)
    conn = pool.make_connection()
    assert isinstance(conn, SSLConnection)
    assert conn.ssl_min_version == ssl.TLSVersion.TLSv1_2
    assert conn.health_check_interval == HEALTH_CHECK_INTERVAL
    assert conn.client_name == CLIENT_NAME
    assert conn.socket_timeout == 2.0


class SilentServer:
    """Accepts connections and never answers: the worst case for timeouts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            while True:
                self.accepted.append(self.sock.accept()[0])
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_silent_server_costs_one_timeout_not_nested_retries() -> None:
    server = SilentServer()
    try:
        client = create_client(
            Settings(
                redis_url=f"redis://127.0.0.1:{server.port}",
                redis_connect_timeout=0.1,
                redis_socket_timeout=0.1,
            )
        )
        with pytest.raises(redis.TimeoutError):
            client.ping()
        # Retrying timeouts would have opened (1 + 2) * (1 + 2) = 9 connections.
        assert len(server.accepted) == 1
    finally:
        server.close()


def test_cluster_with_no_reachable_node_is_store_unavailable() -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{closed_port()}", redis_cluster=True)
    with pytest.raises(StoreUnavailableError, match="cannot reach the cluster"):
        create_client(settings)


# --- real servers ----------------------------------------------------------------------

ADMIN_PASSWORD = "admin-pw"


def lock_down(client: redis.Redis, app_password: str) -> None:
    """An admin user, an app user, and the default user switched off."""
    client.acl_setuser(
        "admin", enabled=True, passwords=[f"+{ADMIN_PASSWORD}"], commands=["+@all"], keys=["*"]
    )
    client.acl_setuser(
        "app", enabled=True, passwords=[f"+{app_password}"], commands=["+@all"], keys=["*"]
    )
    client.acl_setuser("default", enabled=False)


@pytest.fixture(scope="module")
def standalone() -> Iterator[Engine]:
    with start_standalone() as engine:
        yield engine


@pytest.fixture(scope="module")
def cluster() -> Iterator[Engine]:
    with start_cluster(2) as engine:
        yield engine


@pytest.fixture(scope="module")
def locked_standalone() -> Iterator[Engine]:
    with start_standalone() as engine:
        lock_down(redis.Redis.from_url(engine.url), PASSWORD)
        yield engine


@pytest.fixture(scope="module")
def locked_cluster() -> Iterator[Engine]:
    with start_cluster(2) as engine:
        for url in engine.urls:
            lock_down(redis.Redis.from_url(url), PASSWORD)
        yield engine


def whoami(client: ClientType) -> str:
    name = client.acl_whoami()
    return name.decode() if isinstance(name, bytes) else name


def node_clients(client: RedisCluster) -> list[redis.Redis]:
    nodes = client.nodes_manager.nodes_cache.values()
    return [client.get_redis_connection(node) for node in nodes]


@pytest.mark.own_servers
def test_standalone_client_connects_names_itself_and_returns_bytes(standalone: Engine) -> None:
    client = create_client(Settings(redis_url=standalone.url))
    try:
        assert client.ping() is True
        assert client.client_getname() == CLIENT_NAME
        client.set("wh:test:bytes", "é")
        assert client.get("wh:test:bytes") == "é".encode()
    finally:
        client.close()


@pytest.mark.own_servers
def test_cluster_client_connects_and_every_node_has_the_options(cluster: Engine) -> None:
    client = create_client(Settings(redis_url=cluster.url, redis_cluster=True))
    try:
        assert isinstance(client, RedisCluster)
        assert client.ping() is True
        nodes = node_clients(client)
        assert len(nodes) == 2
        for node in nodes:
            options = node.connection_pool.connection_kwargs
            assert options["health_check_interval"] == HEALTH_CHECK_INTERVAL
            assert options["client_name"] == CLIENT_NAME
            assert options["socket_timeout"] == 2.0
    finally:
        client.close()


@pytest.mark.own_servers
def test_cluster_flag_against_a_standalone_server_is_a_configuration_error(
    standalone: Engine,
) -> None:
    with pytest.raises(ConfigurationError, match="cluster"):
        create_client(Settings(redis_url=standalone.url, redis_cluster=True))


@pytest.mark.own_servers
def test_secret_auth_against_a_locked_server_and_rotation(
    secretsmanager: SecretsManagerClient, locked_standalone: Engine
) -> None:
    # Without credentials the server refuses us: auth is really in play.
    anonymous = create_client(Settings(redis_url=locked_standalone.url))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()

    arn = new_secret(secretsmanager, creds_json("app", PASSWORD))
    settings = Settings(
        redis_url=locked_standalone.url, redis_secret_arn=arn, secret_max_age_seconds=0
    )
    client = create_client(settings)
    admin = redis.Redis.from_url(locked_standalone.url, username="admin", password=ADMIN_PASSWORD)
    try:
        assert client.ping() is True
        assert whoami(client) == "app"

        # Rotation: the server takes the new password only, the secret holds it, and the
        # connection is dropped (as MemoryDB does after 12 h or on failover).
        admin.acl_setuser("app", enabled=True, passwords=["+rotated-pw", f"-{PASSWORD}"])
        secretsmanager.put_secret_value(SecretId=arn, SecretString=creds_json("app", "rotated-pw"))
        admin.client_kill_filter(user="app")
        assert client.ping() is True
        assert whoami(client) == "app"
    finally:
        admin.acl_setuser("app", enabled=True, passwords=[f"+{PASSWORD}", "-rotated-pw"])
        client.close()
        admin.close()


@pytest.mark.own_servers
def test_bad_secret_fails_the_command_then_a_fixed_secret_works(
    secretsmanager: SecretsManagerClient, locked_standalone: Engine
) -> None:
    arn = new_secret(secretsmanager, json.dumps({"username": "app"}))
    client = create_client(
        Settings(redis_url=locked_standalone.url, redis_secret_arn=arn, secret_max_age_seconds=0)
    )
    try:
        with pytest.raises(ConfigurationError, match="password"):
            client.ping()
        # The socket opened for that attempt was closed, not pooled unauthenticated.
        secretsmanager.put_secret_value(SecretId=arn, SecretString=creds_json("app", PASSWORD))
        assert client.ping() is True
        assert whoami(client) == "app"
    finally:
        client.close()


@pytest.mark.own_servers
def test_secret_auth_on_every_cluster_node(
    secretsmanager: SecretsManagerClient, locked_cluster: Engine
) -> None:
    arn = new_secret(secretsmanager, creds_json("app", PASSWORD))
    client = create_client(
        Settings(redis_url=locked_cluster.url, redis_cluster=True, redis_secret_arn=arn)
    )
    try:
        assert isinstance(client, RedisCluster)
        assert [whoami(node) for node in node_clients(client)] == ["app", "app"]
        for i in range(20):  # keys on both shards
            client.set(f"wh:{{{i}}}", i)
            assert client.get(f"wh:{{{i}}}") == str(i).encode()
    finally:
        client.close()


@pytest.mark.own_servers
def test_bad_secret_in_cluster_mode_is_a_configuration_error_at_start(
    secretsmanager: SecretsManagerClient, locked_cluster: Engine
) -> None:
    arn = new_secret(secretsmanager, "not json at all")
    settings = Settings(redis_url=locked_cluster.url, redis_cluster=True, redis_secret_arn=arn)
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        create_client(settings)
