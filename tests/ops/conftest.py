"""The operating tests use the API's harness (an app on the test's database, an admin, customers)."""

from tests.api.conftest import api

__all__ = ["api"]
