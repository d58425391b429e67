"""Running the Lambda handlers locally, as Lambda would: a context, the modules, the store.

- ``FakeLambdaContext``: Powertools' ``LambdaContext`` with the values Lambda fills in
  (function name, ARN, memory, a fresh request id, log group/stream) and a real
  deadline behind ``get_remaining_time_in_millis()``. Powertools ships only the type.
- ``load_handler(name)``: imports ``functions/<name>/app.py`` by file path under a
  module name of its own (the three handlers are all ``app.py``), with the function's
  directory first on ``sys.path`` while it imports, as in the Lambda task root.
- ``local_store(settings)``: the ``HistoryStore`` the handlers get through
  ``watch_history.runtime`` when the demo or the local server runs them.
- ``patched_environ``/``env_defaults``: environment variables for a while (Powertools
  reads some when a handler module is imported, others on each invocation).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import redis
from aws_lambda_powertools.utilities.typing import LambdaContext
from aws_lambda_powertools.utilities.typing.lambda_client_context import LambdaClientContext
from aws_lambda_powertools.utilities.typing.lambda_cognito_identity import (
    LambdaCognitoIdentity,
)
from redis.cluster import RedisCluster

from watch_history.connection import ClientType
from watch_history.settings import Settings
from watch_history.store import HistoryStore

__all__ = [
    "ACCOUNT_ID",
    "FUNCTIONS",
    "REGION",
    "FakeLambdaContext",
    "Handler",
    "env_defaults",
    "load_handler",
    "load_module",
    "local_store",
    "patched_environ",
]

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"

Handler = Callable[[dict[str, Any], Any], Any]
"""``lambda_handler(event, context)``."""

_import_lock = threading.Lock()


class FakeLambdaContext(LambdaContext):
    """A ``LambdaContext`` for one local invocation (make a new one per invocation)."""

    def __init__(
        self,
        function_name: str,
        *,
        timeout_seconds: float = 30.0,
        memory_limit_in_mb: int = 512,
        region: str = REGION,
        account_id: str = ACCOUNT_ID,
    ) -> None:
        request_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_version = "$LATEST"
        self._invoked_function_arn = (
            f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        )
        self._memory_limit_in_mb = memory_limit_in_mb
        self._aws_request_id = request_id
        self._log_group_name = f"/aws/lambda/{function_name}"
        today = datetime.now(UTC).strftime("%Y/%m/%d")
        self._log_stream_name = f"{today}/[$LATEST]{uuid.uuid4().hex}"
        identity = LambdaCognitoIdentity()
        identity._cognito_identity_id = ""
        identity._cognito_identity_pool_id = ""
        self._identity = identity
        client_context = LambdaClientContext()
        client_context._custom = {}
        client_context._env = {}
        self._client_context = client_context
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        """Milliseconds until this invocation's timeout (never negative)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(name: str, *, attribute: str = "lambda_handler") -> Handler:
    """``functions/<name>/app.py``'s handler, imported afresh as module ``_local_<name>``.

    Raises FileNotFoundError when the function's ``app.py`` does not exist.
    """
    module = load_module(name)
    handler: Handler = getattr(module, attribute)
    return handler


def load_module(name: str) -> ModuleType:
    """Import ``functions/<name>/app.py`` by path (see ``load_handler``)."""
    directory = FUNCTIONS / name
    path = directory / "app.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    module_name = f"_local_{name}_app"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    with _import_lock:
        sys.modules[module_name] = module  # dataclasses and pydantic look modules up
        sys.path.insert(0, str(directory))
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(directory))
    return module


def create_client(settings: Settings) -> ClientType:
    """The service's client factory (``watch_history.connection``), else a plain one."""
    try:
        connection = importlib.import_module("watch_history.connection")
    except ModuleNotFoundError as exc:
        if exc.name != "watch_history.connection":
            raise
        if settings.redis_cluster:
            return RedisCluster.from_url(settings.redis_url)
        return redis.Redis.from_url(settings.redis_url)
    client: ClientType = connection.create_client(settings)
    return client


def local_store(settings: Settings) -> HistoryStore:
    """A store on the server ``settings`` name (close it with ``store.client.close()``)."""
    return HistoryStore(create_client(settings), settings)


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables; restore them afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def env_defaults(values: Mapping[str, str]) -> contextlib.AbstractContextManager[None]:
    """Set the variables the environment does not set already (restored afterwards)."""
    return patched_environ({k: v for k, v in values.items() if k not in os.environ})
