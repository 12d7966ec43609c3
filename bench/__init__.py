"""Load and latency benchmarks for Switchboard (`uv run python -m bench.load`)."""
