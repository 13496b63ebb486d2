"""server.authz_listen / authz_dialect / authz_path_prefix: the decision listener's keys (errors: test_config_errors)."""

from __future__ import annotations

from gateway.config.model import Listen
from tests.config.helpers import doc, parse


def test_decision_keys_parse() -> None:
    cfg = parse(doc("""\
        server:
          authz_listen: "127.0.0.1:9191"
          authz_dialect: envoy
          authz_path_prefix: /authz
        """))
    assert cfg.server.authz_listen == Listen("127.0.0.1", 9191)
    assert (cfg.server.authz_dialect, cfg.server.authz_path_prefix) == ("envoy", "/authz")


def test_decision_mode_is_off_by_default() -> None:
    cfg = parse("server: {}\n")
    assert cfg.server.authz_listen is None
    assert (cfg.server.authz_dialect, cfg.server.authz_path_prefix) == ("auto", "")
