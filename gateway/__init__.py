"""JWT sidecar gateway: verifies bearer tokens and applies route policies in front of an application."""

__version__ = "0.1.0"
