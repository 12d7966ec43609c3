"""Pydantic models of the edge's HTTP boundary."""
