"""`python -m connector.simulator [options]`: the local Semarize API."""

import argparse

from connector.simulator.options import add_arguments
from connector.simulator.server import main

parser = argparse.ArgumentParser(
    prog="python -m connector.simulator",
    description="A local stand-in for the Semarize Runs API (see docs/simulator.md).",
)
add_arguments(parser)
raise SystemExit(main(parser.parse_args()))
