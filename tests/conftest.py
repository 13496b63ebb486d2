"""Repository-wide test settings."""
