"""What every layer uses: errors, atomic file writes, the one YAML loader, output folders, the result store, executors, tracking, determinism, child processes, interrupts, user code."""
