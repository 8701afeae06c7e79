"""The built-in PoYo simulator used in sandbox mode (no POYO_API_KEY)."""
