"""Federated persona learning: the server (`tomo federation serve`), the client
(`push`, `pull`) and their commands. The math is brain/persona/federation.py."""
