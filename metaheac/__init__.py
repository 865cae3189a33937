"""MetaHeac audience expansion: the library. It knows nothing of KFP or TorchX."""

__version__ = "0.1.0"
