"""The HTTP API and web pages: ``create_app`` builds the one FastAPI app."""

from serving.api.main import create_app

__all__ = ["create_app"]
