"""Tests and benchmark smoke tests."""
