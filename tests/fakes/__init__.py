"""Fakes of outside services that speak their real wire protocols on 127.0.0.1."""
