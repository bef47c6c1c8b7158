"""Fault injection: kill -9, a full or read-only disk, files changed behind the server's back."""
