"""TrustedPeers: which peers' forwarding headers are believed (DPoP's trusted_proxies, XFCC's trusted_peers)."""

from __future__ import annotations

from gateway.peers import TrustedPeers


def test_membership_by_address_and_cidr() -> None:
    peers = TrustedPeers(["10.0.0.0/8", "::1"])
    assert "10.1.2.3" in peers and "::1" in peers
    assert "11.0.0.1" not in peers and "::2" not in peers


def test_ipv4_mapped_peer_matches_its_ipv4_network() -> None:
    # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
    assert "::ffff:10.0.0.7" in TrustedPeers(["10.0.0.0/8"])


def test_nothing_is_trusted_by_default_or_without_an_address() -> None:
    assert not TrustedPeers([])
    assert "127.0.0.1" not in TrustedPeers([])
    for peer in (None, "", "not-an-ip", "10.0.0.1:443"):
        assert peer not in TrustedPeers(["0.0.0.0/0"])
