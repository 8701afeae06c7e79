"""API keys: who may call the client API, and whose jobs they see."""
