"""The public, official-SDK-shaped clients (thin façades over the actors)."""

from .backcompat import BackcompatSamplingClientFuture, BackcompatTrainingClientFuture
from .rest import RestClient
from .service import ServiceClient
from .training import TrainingClient

__all__ = [
    "BackcompatSamplingClientFuture",
    "BackcompatTrainingClientFuture",
    "RestClient",
    "ServiceClient",
    "TrainingClient",
]
