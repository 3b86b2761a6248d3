"""Runner, configs, evaluation and benchmarks."""
