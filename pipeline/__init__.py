"""Batch image editing with the 1min.ai API: manifest → plan → scheduler → client → store."""

__version__ = "0.1.0"
