"""Check a built HistoryLayer directory (``sam build`` output) before it ships.

The layer is built on an x86_64 host for Lambda's arm64 CPython (see shared/Makefile),
so a wrong wheel would only show up at cold start in AWS. This looks at what pip put
there instead::

    python -m devtools.check_layer .aws-sam/build/HistoryLayer [--python 3.14]

Checks: every ELF file is a 64-bit aarch64 object; every installed wheel's tags are
for the target (pure Python, or ``cp3XX``/``abi3`` on an aarch64 platform, never
x86_64); the dependency packages and ``watch_history`` with its Lua scripts are there;
no byte code compiled by the host's interpreter; the unzipped size fits Lambda's limit.
Exit status 1 and one line per problem when something is wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "EM_AARCH64",
    "LAMBDA_UNZIPPED_LIMIT",
    "REQUIRED_PACKAGES",
    "check_layer",
    "elf_machine",
    "main",
    "wheel_tags",
]

EM_AARCH64 = 183  # e_machine of an AArch64 ELF object (0xB7)
ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2

# Import names of shared/requirements.txt (and the [tracer] extra's aws_xray_sdk).
REQUIRED_PACKAGES = (
    "aws_lambda_powertools",
    "aws_xray_sdk",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "redis",
)

# Function code plus all its layers, unzipped.
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


def elf_machine(path: Path) -> tuple[int, int] | None:
    """``(EI_CLASS, e_machine)`` of an ELF file, or None if ``path`` is not ELF."""
    with path.open("rb") as f:
        header = f.read(20)
    if len(header) < 20 or not header.startswith(ELF_MAGIC):
        return None
    machine = header[18:20]
    return header[4], int.from_bytes(machine, "little" if header[5] == 1 else "big")


def wheel_tags(wheel_file: Path) -> list[str]:
    """The ``Tag:`` values of a ``*.dist-info/WHEEL`` file."""
    tags = []
    for line in wheel_file.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "tag":
            tags.append(value.strip())
    return tags


def _tag_problem(tag: str, cp: str) -> str | None:
    """Why one wheel tag (``py3-none-any``, ``cp314-cp314-manylinux...``) is wrong."""
    try:
        interpreter, abi, platform = tag.split("-")
    except ValueError:
        return f"malformed wheel tag {tag!r}"
    if platform == "any":
        return None
    if "x86_64" in platform or "amd64" in platform or "i686" in platform:
        return f"x86 wheel ({tag})"
    if "aarch64" not in platform:
        return f"wheel for another platform ({tag})"
    if abi == "abi3":
        return None if interpreter.startswith("cp3") else f"odd abi3 wheel ({tag})"
    if abi != cp or interpreter != cp:
        return f"binary wheel for another interpreter ({tag}, want {cp})"
    return None


def _files(root: Path) -> Iterable[Path]:
    return (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def check_layer(
    layer_dir: Path,
    *,
    python_version: str = "3.14",
    source_package: Path | None = None,
    required: Sequence[str] = REQUIRED_PACKAGES,
) -> list[str]:
    """Problems found in a built layer directory (empty when it is fine).

    ``source_package`` is ``shared/watch_history``: every ``lua/*.lua`` there must be
    in the layer too.
    """
    problems: list[str] = []
    site = layer_dir / "python"
    if not site.is_dir():
        return [f"{site} is missing (Lambda reads layer code from /opt/python)"]
    cp = "cp" + python_version.replace(".", "")
    pyc_tag = f".cpython-{python_version.replace('.', '')}"

    total = 0
    for path in _files(layer_dir):
        total += path.stat().st_size
        rel = path.relative_to(layer_dir)
        ident = elf_machine(path)
        if ident is not None and ident != (ELFCLASS64, EM_AARCH64):
            problems.append(f"{rel}: ELF class {ident[0]} machine {ident[1]}, want 64-bit aarch64")
        if path.suffix == ".pyc" and pyc_tag not in path.name:
            problems.append(f"{rel}: byte code of another interpreter")
        if path.name == "WHEEL" and path.parent.name.endswith(".dist-info"):
            problems.extend(
                f"{rel.parent}: {why}"
                for why in (_tag_problem(t, cp) for t in wheel_tags(path))
                if why is not None
            )
    if total > LAMBDA_UNZIPPED_LIMIT:
        problems.append(f"layer is {total / 2**20:.0f} MiB unzipped, over Lambda's 250 MiB")

    for name in required:
        if not (site / name).is_dir():
            problems.append(f"python/{name} is missing")

    pkg = site / "watch_history"
    if not (pkg / "__init__.py").is_file():
        problems.append("python/watch_history/__init__.py is missing")
    built_lua = {p.name for p in (pkg / "lua").glob("*.lua")}
    if not built_lua:
        problems.append("python/watch_history/lua/*.lua is missing")
    if source_package is not None:
        wanted = {p.name for p in (source_package / "lua").glob("*.lua")}
        problems.extend(
            f"python/watch_history/lua/{name} is missing" for name in sorted(wanted - built_lua)
        )
        wanted_py = {p.name for p in source_package.glob("*.py")}
        built_py = {p.name for p in pkg.glob("*.py")}
        problems.extend(
            f"python/watch_history/{name} is missing" for name in sorted(wanted_py - built_py)
        )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("layer_dir", type=Path, help="e.g. .aws-sam/build/HistoryLayer")
    parser.add_argument("--python", default="3.14", help="Lambda runtime's Python version")
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "shared" / "watch_history",
        help="the watch_history sources the layer was built from",
    )
    args = parser.parse_args(argv)
    problems = check_layer(args.layer_dir, python_version=args.python, source_package=args.source)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{args.layer_dir}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
