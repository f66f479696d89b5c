"""Strongroom: encrypted, multi-region backups of PostgreSQL databases and object storage."""

from __future__ import annotations

__version__ = "0.1.0"
