"""The server key: one secret per deployment from which per-purpose keys are derived."""
