"""Turn a YAML config file into a validated GatewayConfig, reporting every error at once with its key path and line.

`parse_config` walks the whole document and never stops at the first problem
(oauth2-proxy style): each section module reads its block through one shared
Reader, each mistake becomes a ConfigIssue, and if there is any, ConfigInvalid
carries all of them sorted by line. The only I/O besides reading the config
file is what the contract demands be checked at load: secret environment
variables and files, and JWK Set files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from gateway.config.cache import parse_cache
from gateway.config.decryption import DECRYPTION_SECTION
from gateway.config.errors import ConfigInvalid, ConfigIssue
from gateway.config.forward import FORWARD_SECTION
from gateway.config.issuers import SUPPORTED_ALGORITHMS, parse_issuers
from gateway.config.model import GatewayConfig
from gateway.config.reader import At, Block, Reader, section
from gateway.config.routes import ROUTES_SECTION
from gateway.config.server import parse_server
from gateway.config.tokens import parse_tokens
from gateway.config.upstream import parse_upstream
from gateway.config.yaml_lines import MAX_DOCUMENT_BYTES, MarkedMap, YamlError, load_yaml

__all__ = ["SUPPORTED_ALGORITHMS", "ConfigInvalid", "ConfigIssue", "load_config", "parse_config"]

# The document, one block per top-level section, read in this order (later blocks may use
# what earlier ones read: forward the token sources, routes the issuer names).
# A new section is one module and one line here (plus its field in GatewayConfig).
SECTIONS: tuple[Block, ...] = (
    section("server", parse_server),
    section("upstream", parse_upstream),
    section("tokens", parse_tokens),
    section("issuers", parse_issuers),
    FORWARD_SECTION,
    ROUTES_SECTION,
    section("cache", parse_cache),
    DECRYPTION_SECTION,  # after issuers: it checks their require_encryption
)


def parse_config(text: str, *, source: str, base_dir: Path, environ: Mapping[str, str]) -> GatewayConfig:
    """Validate a config document; raise ConfigInvalid listing every problem, sorted by line."""
    reader = Reader(source=source, base_dir=base_dir, environ=environ)
    try:
        root = load_yaml(text)
    except YamlError as exc:
        raise ConfigInvalid([ConfigIssue("", exc.problem.line, exc.problem.message, source)]) from None
    reader.report_duplicates(root, "", set())
    if root is None:
        root = MarkedMap(1)  # an empty file: every default
    read = reader.blocks(At(root, "", 1), SECTIONS)
    if read is None or reader.issues:  # (a document that is not a mapping is an issue)
        raise ConfigInvalid(reader.issues)
    return GatewayConfig(source=source, **read[1])


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the config file at `path` (relative file paths inside resolve against its directory)."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise ConfigInvalid([ConfigIssue("", None, f"cannot read config file: {exc.strerror or type(exc).__name__}", source)]) from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ConfigInvalid([ConfigIssue("", None, f"config file larger than {MAX_DOCUMENT_BYTES} bytes", source)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigInvalid([ConfigIssue("", None, f"config file is not UTF-8 (byte {exc.start})", source)]) from None
    base_dir = Path(os.path.abspath(source)).parent
    config = parse_config(text, source=source, base_dir=base_dir, environ=os.environ if environ is None else environ)
    return dataclasses.replace(config, sha256=hashlib.sha256(data).hexdigest())
