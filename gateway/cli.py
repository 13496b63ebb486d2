"""Command line: `run`, `check`, `demo`, `explain`, `dpop-proof`; wiring and exit codes only."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway import __version__

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig

DEFAULT_CONFIG = "config/gateway.yaml"


def _config_path(given: str | None) -> str:
    return given or os.environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG


def _load_or_report(path: str) -> GatewayConfig | None:
    """The config, or None after printing every error with its line to stderr."""
    from gateway.config.load import ConfigInvalid, load_config

    try:
        return load_config(path)
    except ConfigInvalid as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"{path}: {len(exc.issues)} error(s)", file=sys.stderr)
        return None


def _cmd_check(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    cfg = _load_or_report(path)
    if cfg is None:
        return 1
    print(f"{path}: valid: {len(cfg.issuers)} issuer(s), {len(cfg.routes)} route(s)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    # A running gateway writes JSON lines only, its refusal to start included.
    import logging

    from gateway.config.load import ConfigInvalid, load_config
    from gateway.process_log import configure_logging
    from gateway.server import run_forever

    configure_logging()
    path = _config_path(args.config)
    try:
        cfg = load_config(path)
    except ConfigInvalid as exc:
        logging.getLogger("gateway").error(
            "config refused; not starting", extra={"config": path, "issues": [i.as_dict() for i in exc.issues]}
        )
        return 1
    return run_forever(cfg, path)


EXIT_ALLOWED, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def _cmd_explain(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from gateway.explain import explain

    # Read from stdin with "-", so the token never lands in shell history.
    token = sys.stdin.read() if args.token == "-" else args.token
    token = token.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    if not token:
        print("gateway explain: no token given", file=sys.stderr)
        return EXIT_USAGE
    cfg = _load_or_report(_config_path(args.config))
    if cfg is None:
        return EXIT_USAGE
    thumbprint = None
    if args.client_cert is not None:
        from gateway.cert_binding import pem_thumbprint

        try:
            thumbprint = pem_thumbprint(args.client_cert)
        except (OSError, ValueError) as exc:
            print(f"gateway explain: --client-cert {args.client_cert}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
            return EXIT_USAGE
    logging.getLogger("gateway").setLevel(logging.ERROR)  # explain reports key loading itself
    result = asyncio.run(
        explain(
            cfg, token, method=args.method, path=args.path, host=args.host, offline=args.offline,
            client_certificate=thumbprint, dpop_proof=args.dpop,
        )
    )
    sys.stdout.write(result.text())
    return EXIT_ALLOWED if result.allowed else EXIT_REFUSED


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(port=args.port, admin_port=args.admin_port, authz_port=args.authz_port if args.authz else None)


def _cmd_dpop_proof(args: argparse.Namespace) -> int:
    from gateway.dpop_proof import DpopKey

    try:
        key = DpopKey.load(args.key)
    except (OSError, ValueError) as exc:
        print(f"{args.key}: {exc}", file=sys.stderr)
        return 1
    print(key.jkt if args.jkt else key.proof(args.method, args.url, args.token, args.nonce))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="JWT sidecar gateway: verifies bearer tokens in front of an application.",
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="serve (config: -c, else $GATEWAY_CONFIG, else config/gateway.yaml)")
    run.add_argument("-c", "--config", help="config file")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check", help="validate a config file; exit 0 if valid, 1 listing every error")
    check.add_argument("-c", "--config", help="config file")
    check.set_defaults(func=_cmd_check)

    explain = sub.add_parser(
        "explain",
        help="why a token would pass or fail: each check in order; exit 0 allowed, 1 refused, 2 bad usage or config",
    )
    explain.add_argument("-c", "--config", help="config file")
    explain.add_argument("--method", default="GET", help="request method (default GET)")
    explain.add_argument("--path", default="/", help="request path (default /)")
    explain.add_argument("--host", help="Host header, for routes that match on it")
    explain.add_argument("--offline", action="store_true", help="use only file and inline keys: fetch nothing")
    explain.add_argument(
        "--client-cert", metavar="PEM", help="the TLS client certificate to assume (for certificate-bound tokens)"
    )
    explain.add_argument("--dpop", metavar="PROOF", help="send the token with the DPoP scheme and this proof "
                         "(htu: server.public_origin, else http://HOST from --host)")
    explain.add_argument("token", help='the token, or "-" to read it from stdin (keeps it out of shell history)')
    explain.set_defaults(func=_cmd_explain)

    demo = sub.add_parser("demo", help="zero-setup demo: demo issuer + echo upstream, prints curl lines")
    demo.add_argument("--port", type=int, default=8080, help="proxy port (default 8080)")
    demo.add_argument("--admin-port", type=int, default=9901, help="admin port (default 9901)")
    demo.add_argument("--authz", action="store_true", help="also open the decision port and print check examples")
    demo.add_argument("--authz-port", type=int, default=9191, help="decision port with --authz (default 9191)")
    demo.set_defaults(func=_cmd_demo)

    proof = sub.add_parser("dpop-proof", help="print a fresh DPoP proof (RFC 9449) signed with a P-256 PEM key")
    proof.add_argument("--key", required=True, help="the client's P-256 private key (PEM)")
    proof.add_argument("--method", default="GET", help="the request method (htm)")
    proof.add_argument("--url", default="", help="the request URL as the client addresses it (htu)")
    proof.add_argument("--token", help="the access token the proof goes with (ath)")
    proof.add_argument("--nonce", help="a server nonce from a DPoP-Nonce header")
    proof.add_argument("--jkt", action="store_true", help="print the key's thumbprint (the tokens' cnf.jkt) instead")
    proof.set_defaults(func=_cmd_dpop_proof)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
