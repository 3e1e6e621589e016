"""The local Semarize API: a faithful, deterministic stand-in for development and tests.

`python -m connector.simulator` (or `semarize-connector simulate`) runs it; tests embed it
with `start_simulator(config)`. See docs/simulator.md.
"""

from connector.simulator.options import SimConfig, add_arguments, config_from_args
from connector.simulator.server import RunningSimulator, main, start_simulator

__all__ = [
    "RunningSimulator",
    "SimConfig",
    "add_arguments",
    "config_from_args",
    "main",
    "start_simulator",
]
