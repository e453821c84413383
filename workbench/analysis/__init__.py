"""Per-layer analysis: sensitivity sweeps, layer statistics, divergence, batching, the graph runner, pruning sweeps and recovery tables."""
