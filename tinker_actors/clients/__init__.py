"""The public, official-SDK-shaped clients (thin façades over the actors)."""

from .rest import RestClient
from .service import ServiceClient
from .training import ClientFuture, TrainingClient

__all__ = ["ClientFuture", "RestClient", "ServiceClient", "TrainingClient"]
