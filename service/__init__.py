"""ThinkSearch: a retrieval service that thinks before it retrieves."""

__version__ = "0.1.0"
