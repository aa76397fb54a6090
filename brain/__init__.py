"""tomo's brain: the platform-free domain (messages, ports, the pipeline, memory)."""
