"""Forwarders to the city's backends, one module per kind, all built on ``forward.base``."""

from gateway.forward.base import DeliveryLoop, Forwarder, ForwarderError, SendResult

__all__ = ["DeliveryLoop", "Forwarder", "ForwarderError", "SendResult"]
