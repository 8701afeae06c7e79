"""poyo-relay: a durable broker for asynchronous AI video generation jobs."""

__version__ = "0.1.0"
