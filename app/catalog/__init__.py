"""The supported models: one declarative input schema per model, and the registry."""
