"""Provider callbacks: authenticate, store, and ask for confirmation (docs/API.md)."""
