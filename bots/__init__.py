"""tomo's edges: the platform adapters, the terminal chat and the process that runs them."""
