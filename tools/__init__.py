"""Command-line tools that sit beside the library (benchmarks, utilities)."""
