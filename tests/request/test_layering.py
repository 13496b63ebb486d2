"""Guards the request-path modules' dependency direction: pure, no aiohttp, no sideways imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway

ROOT = Path(gateway.__file__).parent
# module -> the gateway modules it may import (claim_path is the shared helper;
# a Route carries its compiled ClaimRules, so routing builds them).
ALLOWED = {
    "sanitize": set(),
    "claim_path": set(),
    "authz": {"gateway.claim_path", "gateway.config.model"},
    "routing": {"gateway.authz", "gateway.config.model"},
    "claim_headers": {"gateway.claim_path", "gateway.config.model"},
    "extract": {"gateway.asked", "gateway.config.model"},
    "asked": set(),
}
FORBIDDEN_PREFIXES = ("aiohttp", "asyncio", "socket", "os", "io", "logging", "http.cookies")


def imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports(module: str) -> None:
    found = imports(module)
    internal = {name for name in found if name == "gateway" or name.startswith("gateway.")}
    assert internal <= ALLOWED[module]
    for name in found:
        assert not any(name == p or name.startswith(p + ".") for p in FORBIDDEN_PREFIXES), name


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_docstring_opens_with_the_modules_job(module: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / f"{module}.py").read_text()))
    assert doc and doc.split("\n")[0].endswith(".")
