"""Language model backends: llama.cpp (embedded default), OpenAI-compatible, stub."""
