"""Print the OpenAPI document of the HTTP API, generated from the handlers' code.

    python -m devtools.openapi > openapi.json        (what ``make openapi`` runs)

The reader (``functions/history_reader/app.py``) and the writer
(``functions/history_writer/app.py``) are two Lambdas behind one HTTP API: each
module's Powertools resolver (module-level ``app``) generates its part, and this merges
them into one document (paths by method; component schemas by name). A function whose
``app.py`` does not exist yet is left out with a note on stderr; one that fails to
import is an error. ``tests/test_openapi.py`` fails when ``openapi.json`` drifts.
"""

from __future__ import annotations

import importlib
import json
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver

from devtools.serve import DEFAULT_HOST, DEFAULT_PORT

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ("history_reader", "history_writer")
TITLE = "Watch history API"
DESCRIPTION = (
    "Where each profile stopped watching each asset: read (GET, with an incremental "
    "changes feed for apps that keep a copy) and edit (PUT, POST for batches, DELETE). "
    "Behind API Gateway (HTTP API) with a JWT authorizer: the token's profile claim "
    "(PROFILE_CLAIM, default profile_id) must contain the profile, or its scopes "
    "ADMIN_SCOPE (default history:admin)."
)
SECURITY_SCHEME = "jwt"
SERVERS: list[dict[str, Any]] = [
    {
        "url": f"http://{DEFAULT_HOST}:{DEFAULT_PORT}",
        "description": "make serve, on a developer's machine (PORT changes the port); it "
        "takes development claims from X-Dev-Profile or X-Dev-Claims instead of a JWT",
    },
    {
        "url": "https://{apiId}.execute-api.{region}.amazonaws.com",
        "description": "the deployed HTTP API (the stack's HttpApiUrl output)",
        "variables": {
            "apiId": {"default": "abcde12345", "description": "the HTTP API's id"},
            "region": {"default": "eu-west-1", "description": "the stack's AWS region"},
        },
    },
]
_REF = "#/components/schemas/"


class MergeError(RuntimeError):
    """Two functions document the same operation, or the same operationId."""


def version() -> str:
    """The project's version (pyproject.toml): the document's ``info.version``."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def load_app(function: str) -> ApiGatewayResolver | None:
    """``functions/<function>/app.py``'s resolver, or None when the file does not exist."""
    if not (ROOT / "functions" / function / "app.py").is_file():
        return None
    module = importlib.import_module(f"functions.{function}.app")
    app = getattr(module, "app", None)
    if not isinstance(app, ApiGatewayResolver):
        raise TypeError(f"functions/{function}/app.py has no Powertools resolver named app")
    return app


def schema_of(app: ApiGatewayResolver) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(app.get_openapi_json_schema(title=TITLE, version="0"))
    return document


def _rewrite_refs(node: Any, rename: Callable[..., str]) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                _REF + rename(value.removeprefix(_REF))
                if key == "$ref" and isinstance(value, str) and value.startswith(_REF)
                else _rewrite_refs(value, rename)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(value, rename) for value in node]
    return node


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = set().union(*(_refs(v) for v in node.values())) if node else set()
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            found.add(ref.removeprefix(_REF))
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def _referenced(paths: dict[str, Any], schemas: dict[str, Any]) -> set[str]:
    """The schemas the paths use, directly or through other schemas (Powertools also
    emits its default validation-error schemas, which these handlers replace)."""
    todo = _refs(paths)
    used: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in used and name in schemas:
            used.add(name)
            todo |= _refs(schemas[name]) - used
    return used


def merge(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One document from the functions' documents (``parts``: function name -> document).

    A schema name two functions define differently is kept apart: the later function's
    copy becomes ``<Name>_<function>`` (and its references follow).
    """
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    operation_ids: dict[str, str] = {}
    tags: list[Any] = []
    for function, part in parts.items():
        own = part.get("components", {}).get("schemas", {})
        renamed = {
            name: f"{name}_{function}"
            for name, schema in own.items()
            if name in schemas and schemas[name] != schema
        }
        document = _rewrite_refs(part, lambda name, r=renamed: r.get(name, name))
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            schemas[renamed.get(name, name)] = schema
        for path, operations in document.get("paths", {}).items():
            merged = paths.setdefault(path, {})
            for method, operation in operations.items():
                if method in merged:
                    raise MergeError(f"{method.upper()} {path} is documented twice")
                op_id = operation.get("operationId")
                if op_id in operation_ids:
                    where = f"{operation_ids[op_id]} and {function}"
                    raise MergeError(f"operationId {op_id} is in {where}")
                if op_id:
                    operation_ids[op_id] = function
                merged[method] = {**operation, "security": [{SECURITY_SCHEME: []}]}
        tags.extend(t for t in document.get("tags", []) if t not in tags)
    used = _referenced(paths, schemas)
    document = {
        "openapi": next(iter(parts.values()))["openapi"] if parts else "3.1.0",
        "info": {"title": TITLE, "version": version(), "description": DESCRIPTION},
        "servers": SERVERS,
        "paths": {path: paths[path] for path in sorted(paths)},
        "components": {
            "schemas": {name: schemas[name] for name in sorted(used)},
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "checked by the HTTP API's JWT authorizer",
                }
            },
        },
    }
    if tags:
        document["tags"] = tags
    return document


def build() -> dict[str, Any]:
    """The merged document of every function that exists."""
    parts: dict[str, dict[str, Any]] = {}
    for function in FUNCTIONS:
        app = load_app(function)
        if app is None:
            print(
                f"devtools.openapi: functions/{function}/app.py missing: left out", file=sys.stderr
            )
            continue
        parts[function] = schema_of(app)
    return merge(parts)


def render() -> str:
    """The document as ``openapi.json`` holds it."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
