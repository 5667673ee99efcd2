"""Fine-tuning initialisations, one module per `--init` choice (docs/adding-a-strategy.md)."""

from automtl_cli.engine.inits import pretrained, scratch, searched  # noqa: F401  (registration)
from automtl_cli.engine.inits.base import INITS, Init, Initializer

__all__ = ["INITS", "Init", "Initializer"]

INITS.check_complete()
