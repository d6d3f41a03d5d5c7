"""XLA compile policy: the persistent compile cache and per-program CPU compile options."""
