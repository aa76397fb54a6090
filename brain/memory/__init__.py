"""Memory: scopes, the recall index (hybrid lexical + dense), L1 memories, L2 summaries."""
