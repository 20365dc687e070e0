"""The two baselines BENCHMARK.md measures mlqueue against, served the way the common tutorials serve them."""
