"""Load and latency benchmarks for Switchboard (`uv run python -m bench.load`, `uv run python -m bench.dify_stream`)."""
