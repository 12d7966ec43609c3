"""Fake upstream servers used by the tests and the benchmark."""
