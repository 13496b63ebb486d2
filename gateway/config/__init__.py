"""The YAML contract: typed model, loader with line marks, and validation that reports every error."""
