"""Schwebe: edge gateway software for city LoRaWAN and parking sensors."""

__version__ = "0.1.0"
