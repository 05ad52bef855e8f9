"""The credits page and widget are served by the app the API tests build."""

from tests.api.conftest import api

__all__ = ["api"]
