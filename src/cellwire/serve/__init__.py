"""Serve workflows over HTTP with Dify's Service API (``cellwire serve``)."""
