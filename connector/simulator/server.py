"""Running the simulator: in-process (`start_simulator`) or as a blocking command (`main`).

The listening socket is owned here (not by an aiohttp site) so that a `refuse` outage can
close it for real and bind the same port again when the outage ends.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

from aiohttp import web

from connector.simulator.app import SimState, build_app
from connector.simulator.options import SimConfig, config_from_args

_REBIND_TRIES = 100
_REBIND_PAUSE_S = 0.05


class _Listener:
    """The TCP listener for the app; `close()` refuses connections, `open()` binds again."""

    def __init__(self, server: web.Server, host: str, port: int) -> None:
        self._protocol = server
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def open(self, tries: int = 1) -> None:
        """Bind and listen; OSError when the port cannot be had after `tries` tries."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        for attempt in range(1, tries + 1):
            try:
                self._server = await loop.create_server(
                    self._protocol, self.host, self.port, reuse_address=True, backlog=1024
                )
                break
            except OSError:
                if attempt == tries:
                    raise
                await asyncio.sleep(_REBIND_PAUSE_S)
        assert self._server is not None
        self.port = self._server.sockets[0].getsockname()[1]

    async def reopen(self) -> None:
        """Bind the same port again after a refusing outage (retrying for a few seconds)."""
        try:
            await self.open(_REBIND_TRIES)
        except OSError as exc:
            print(f"simulator: cannot listen again on port {self.port}: {exc}", file=sys.stderr)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


class RunningSimulator:
    """A started simulator: `.url`, `.state` (for in-process inspection), `await .stop()`."""

    def __init__(self, state: SimState, runner: web.AppRunner, listener: _Listener) -> None:
        self.state = state
        self._runner = runner
        self._listener = listener
        self._stopped = False

    @property
    def host(self) -> str:
        return self._listener.host

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening, cancel webhook deliveries and close every connection (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        await self.state.outage.close()
        self._listener.close()
        await self.state.webhooks.close()
        await self._runner.cleanup()


async def start_simulator(
    config: SimConfig, host: str = "127.0.0.1", port: int = 0
) -> RunningSimulator:
    """Start a simulator on `host:port` (0 = a free port) in the running event loop."""
    state = SimState(config)
    runner = web.AppRunner(
        build_app(state), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    assert runner.server is not None
    listener = _Listener(runner.server, host, port)
    try:
        await listener.open()
    except BaseException:
        await runner.cleanup()
        raise
    state.outage.attach(listener.close, listener.reopen)
    if config.outage is not None:
        state.outage.start(config.outage, config.outage_seconds, time.monotonic())
    return RunningSimulator(state, runner, listener)


async def _serve(config: SimConfig, host: str, port: int) -> int:
    try:
        sim = await start_simulator(config, host, port)
    except OSError as exc:
        print(f"simulator: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        print(f"simulator listening on {sim.url}", flush=True)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await sim.stop()
    return 0


def main(args: argparse.Namespace) -> int:
    """Run the simulator until SIGINT or SIGTERM. Exit 0 on a clean stop, 2 on bad options."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(config, args.host, args.port))
