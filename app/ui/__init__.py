"""The dashboard: server-rendered pages for people, on top of the same API clients use."""
