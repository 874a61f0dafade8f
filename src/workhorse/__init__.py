"""workhorse: small language models doing the line work, a large model as the chief engineer."""

from workhorse.errors import WorkhorseError

__version__ = "0.1.0"

__all__ = ["WorkhorseError", "__version__"]
