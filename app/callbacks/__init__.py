"""Provider callbacks: authenticate, store, and ask for confirmation (CONTRACT §4)."""
