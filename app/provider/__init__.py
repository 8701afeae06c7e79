"""The PoYo provider: HTTP client and wire format."""
