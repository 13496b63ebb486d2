"""server.authz_listen / authz_dialect / authz_path_prefix: the decision listener's keys."""

from __future__ import annotations

import pytest

from gateway.config.model import Listen
from tests.config.helpers import doc, marked_line, only_issue, parse


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


CASES = [
    ("same_port_as_listen", 'server:\n  listen: "0.0.0.0:8080"\n  authz_listen: "127.0.0.1:8080"  # <-\n',
     "server.authz_listen", "must not share a port with listen"),
    ("same_port_as_admin", 'server:\n  admin_listen: "127.0.0.1:9901"\n  authz_listen: "127.0.0.1:9901"  # <-\n',
     "server.authz_listen", "must not share a port with admin_listen"),
    ("bad_listen", "server:\n  authz_listen: 9191  # <-\n", "server.authz_listen", 'must be a "host:port" string'),
    ("bad_dialect", "server:\n  authz_dialect: ngnix  # <-\n", "server.authz_dialect", "did you mean 'nginx'"),
    ("prefix_trailing_slash", "server:\n  authz_path_prefix: /authz/  # <-\n", "server.authz_path_prefix", "without a trailing '/'"),
    ("prefix_not_absolute", "server:\n  authz_path_prefix: authz  # <-\n", "server.authz_path_prefix", "must start with '/'"),
    ("prefix_not_normalized", "server:\n  authz_path_prefix: /a/../authz  # <-\n", "server.authz_path_prefix", "not normalized"),
]


@pytest.mark.parametrize("text,path,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decision_key_errors(text: str, path: str, fragment: str) -> None:
    issue = only_issue(text)
    assert issue.path == path
    assert issue.line == marked_line(text)
    assert fragment in issue.message
