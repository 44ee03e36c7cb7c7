"""The browser tests drive the same live app as the API tests."""

from tests.app.conftest import app_server  # noqa: F401 (a fixture, found by name)
