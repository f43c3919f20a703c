"""Durus: a persistent object database for Python, compatible with Durus 4.3."""

__version__ = "4.3"
