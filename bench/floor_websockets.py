"""Floor 1: the barest relay Python and this machine allow, written with ``websockets``.

Clients connect to ``/pair/<pair>/<side>`` (side ``a`` or ``b``); every text frame is forwarded
unchanged to the other side of the pair. No parsing, no storage, no broker: what is left of the
latency is the kernel, the event loop and the websocket framing on both ends.

Run: ``python -m bench.floor_websockets --port 8765``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

peers: dict[tuple[str, str], ServerConnection] = {}
OTHER = {"a": "b", "b": "a"}


async def relay(ws: ServerConnection) -> None:
    parts = (ws.request.path if ws.request else "").strip("/").split("/")
    if len(parts) != 3 or parts[0] != "pair" or parts[2] not in OTHER:
        await ws.close(4404, "use /pair/<pair>/<a|b>")
        return
    pair, side = parts[1], parts[2]
    peers[(pair, side)] = ws
    try:
        async for frame in ws:
            peer = peers.get((pair, OTHER[side]))
            if peer is not None:
                with contextlib.suppress(ConnectionClosed):
                    await peer.send(frame)
    finally:
        if peers.get((pair, side)) is ws:
            del peers[(pair, side)]


async def main(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    # Compression off: none of the three servers compresses, so the clients do the same work.
    async with serve(relay, host, port, compression=None, max_queue=None, backlog=4096):
        print(f"floor_websockets listening on {host}:{port}", flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
