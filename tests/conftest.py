"""Shared fixtures: the real browser (tests/browser.py)."""

from tests.browser import browser_page  # noqa: F401 - a fixture, found by pytest here
