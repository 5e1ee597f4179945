"""Long-running load tests built on the load generator: the soak run and the chaos run (docs/benchmarks.md)."""
