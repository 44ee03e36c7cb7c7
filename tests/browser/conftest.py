"""The browser tests drive the same live app as the API tests (tests/app/conftest.py)."""

from tests.app.conftest import app_server, live_app  # noqa: F401 (fixtures, found by name)
