"""The live twin and the ``twin`` command line. The package imports nothing heavy on import."""

from scenes.errors import ConfigError, LineFileError, SimulationError, TwinError

__all__ = ["ConfigError", "LineFileError", "SimulationError", "TwinError"]
__version__ = "0.1.0"
