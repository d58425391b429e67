"""The repair function: operator commands run inside the VPC, where MemoryDB is reachable.

MemoryDB answers only inside its VPC; this function runs there (the stack's subnets and
security group, the layer, the same credentials as the other functions), so an operator
repairs from a laptop with ``sam remote invoke``, no bastion::

    sam remote invoke HistoryRepairFunction --stack-name watch-history --event \\
      '{"action": "replay", "args": ["quarantine", "--queue-url", "URL", "--dry-run"]}'

An action is a command of the layer with a ``main(argv) -> int`` entry point, run with
``args`` as its command line, exactly as the local CLI runs it (docs/operations.md). The
answer: ``{"action", "exitCode", "output", "stderr"}``: what the command printed (its
JSON summary, parsed) and the last lines it wrote on stderr (its logs and, when it could
not run, its one-line failure), which the function's log keeps too.
A bad request (unknown action, bad arguments) is exit code 2 with argparse's message, not
a failed invocation.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from typing import Any, Final

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="history-repair")
STDERR_LINES: Final = 20

# action -> the module whose main(argv) runs it. Adding a command is one entry.
ACTIONS: Final[dict[str, str]] = {
    "replay": "watch_history.replay",
    "upgrade": "watch_history.upgrade",
}


def _parsed(text: str) -> Any:
    """The command's stdout: JSON when it is JSON (a summary), else its lines."""
    try:
        return json.loads(text)
    except ValueError:
        return text.splitlines()


def _refused(action: Any, why: str) -> dict[str, Any]:
    return {"action": action, "exitCode": 2, "output": None, "stderr": [why]}


def run_action(action: Any, args: Any) -> dict[str, Any]:
    """Run one action's ``main(args)``, capturing what it prints."""
    if action not in ACTIONS:
        return _refused(action, f"unknown action {action!r}: one of {sorted(ACTIONS)}")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        return _refused(action, "args: a list of strings")
    main = importlib.import_module(ACTIONS[action]).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = int(main(args))
        except SystemExit as exc:  # argparse: --help, bad arguments
            code = exc.code if isinstance(exc.code, int) else 2
    return {
        "action": action,
        "exitCode": code,
        "output": _parsed(out.getvalue()),
        "stderr": err.getvalue().splitlines()[-STDERR_LINES:],
    }


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = run_action(event.get("action"), event.get("args", []))
    logger.info("repair action done", extra={"result": result})
    return result
