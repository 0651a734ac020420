"""The shared kernel: what every layer may use (clock, caches, change channels,
metrics, log context). It imports nothing of Tahoe Auth but the domain's errors."""
