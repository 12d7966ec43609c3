"""Running Switchboard as real, isolated processes: shared by the tests and the benchmarks (imports neither)."""
