"""Dependencies point one way: jose/ is pure, config/ does no networking, aiohttp only at the edges."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import gateway

ROOT = Path(gateway.__file__).parent
MODULES = sorted(p for p in ROOT.rglob("*.py"))
# The modules that talk HTTP: the server edge, the upstream client, the key fetcher.
AIOHTTP_ALLOWED = {
    "server", "edge", "http1", "http2", "handler", "forward", "admin", "local_reply", "jwks_fetch", "keystore", "demo", "decision",
}


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.add("gateway.<relative>")
    return names


@pytest.mark.parametrize("path", [p for p in MODULES if p.parent.name == "jose"], ids=_name)
def test_jose_imports_only_stdlib_cryptography_and_itself(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        assert (
            name.startswith("gateway.jose") or top == "cryptography" or top in sys.stdlib_module_names
        ), f"{_name(path)} imports {name}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_aiohttp_only_at_the_edges(path: Path) -> None:
    uses = any(n.split(".")[0] in ("aiohttp", "multidict", "yarl") for n in _imports(path))
    if uses:
        # extract and asked take multidict's header types, nothing more.
        assert path.stem in AIOHTTP_ALLOWED or path.stem in ("extract", "asked"), _name(path)


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_h2_only_in_the_http2_protocols(path: Path) -> None:
    uses = any(n.split(".")[0] in ("h2", "hpack", "hyperframe") for n in _imports(path))
    assert not uses or path.stem in ("http2", "upstream_h2", "hpack_cache", "h2_io"), _name(path)


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_module_docstring_says_its_job(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc, f"{_name(path)} has no docstring"
    assert doc.split("\n")[0].rstrip().endswith("."), _name(path)
