"""permessage-deflate interoperability with an independent implementation: Python
`websockets` (which negotiates RFC 7692 by default), against chinwag both ways.

1. `websockets` clients against `chinwag echo`, with chinwag's default (no context
   takeover either way) and with `--deflate-takeover`, offering various parameters
   (window bits, no context takeover): every message comes back intact, and the
   parameters both ends agreed on are the ones expected.
2. `chinwag client` against `websockets` servers (their default, context takeover
   kept, and one without context takeover and with small windows), with and without
   `--deflate-takeover`: lines sent come back, and the server saw the extension
   negotiated and messages compressed.

Usage: python tests/interop/deflate.py path/to/chinwag
Only loopback; every process started is stopped; every wait is bounded.
"""

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)

WAIT = 20  # seconds, for any one step


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def corpus(rng: random.Random) -> list:
    """Chat-like JSON of 200 B to 4 KiB, empty and tiny messages, binary, a large
    compressible text and incompressible bytes."""
    words = "hello world chat message user room joined left typing said the a of".split()
    out = ["", "x", "short text", b"", bytes(range(256))]
    for n in range(30):
        body = " ".join(rng.choice(words) for _ in range(rng.randint(20, 600)))
        out.append(json.dumps({"type": "message", "from": f"user{n}", "room": "general", "text": body}))
    out.append("é€😀 " * 5000)
    out.append(os.urandom(200_000))
    out.append(b"\0" * 3_000_000)
    return out


def deflate_of(ws) -> PerMessageDeflate | None:
    found = [e for e in ws.protocol.extensions if isinstance(e, PerMessageDeflate)]
    return found[0] if found else None


async def echo_round_trips(url: str, factory, expect: dict, rng: random.Random) -> None:
    async with connect(url, extensions=[factory], compression=None, max_size=None, open_timeout=WAIT) as ws:
        pmd = deflate_of(ws)
        assert pmd is not None, f"{url}: permessage-deflate not negotiated with {factory}"
        got = {
            "client_no_context_takeover": pmd.local_no_context_takeover,
            "server_no_context_takeover": pmd.remote_no_context_takeover,
            "client_max_window_bits": pmd.local_max_window_bits,
            "server_max_window_bits": pmd.remote_max_window_bits,
        }
        for key, value in expect.items():
            assert got[key] == value, f"{key}: {got[key]} != {value} ({ws.response.headers})"
        messages = corpus(rng)
        for message in messages:
            await ws.send(message)
            echoed = await asyncio.wait_for(ws.recv(), WAIT)
            assert echoed == message, f"echo differs for a message of {len(message)}"
        # Fragmented: websockets sends an iterable as one message in fragments, the
        # first compressed frame marked with RSV1 only.
        parts = [json.dumps({"part": n, "text": "fragment " * n}) for n in range(40)]
        await ws.send(parts)
        assert await asyncio.wait_for(ws.recv(), WAIT) == "".join(parts)
        # Pipelined: many messages before reading any answer.
        for message in messages[5:25]:
            await ws.send(message)
        for message in messages[5:25]:
            assert await asyncio.wait_for(ws.recv(), WAIT) == message


async def clients_against_chinwag_echo(binary: str) -> None:
    rng = random.Random(7692)
    cases = [
        # What websockets offers by default (like a browser: client_max_window_bits).
        ([], ClientPerMessageDeflateFactory(client_max_window_bits=True),
         {"client_no_context_takeover": True, "server_no_context_takeover": True}),
        ([], ClientPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=9),
         {"server_max_window_bits": 10, "client_max_window_bits": 9, "server_no_context_takeover": True}),
        ([], ClientPerMessageDeflateFactory(server_max_window_bits=8, server_no_context_takeover=True),
         {"server_max_window_bits": 8, "server_no_context_takeover": True}),
        (["--deflate-takeover"], ClientPerMessageDeflateFactory(client_max_window_bits=True),
         {"client_no_context_takeover": False, "server_no_context_takeover": False}),
        (["--deflate-takeover"], ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=11),
         {"server_max_window_bits": 9, "server_no_context_takeover": False, "client_no_context_takeover": False}),
        (["--deflate-takeover"], ClientPerMessageDeflateFactory(client_no_context_takeover=True),
         {"client_no_context_takeover": True, "server_no_context_takeover": False}),
    ]
    for runtime in ["tokio", "async-std", "event-loop"]:
        for flags, factory, expect in cases:
            port = free_port()
            server = subprocess.Popen(
                [binary, "echo", "--addr", f"127.0.0.1:{port}", "--runtime", runtime, *flags],
                stderr=subprocess.DEVNULL,
            )
            try:
                await wait_port(port)
                await echo_round_trips(f"ws://127.0.0.1:{port}/", factory, expect, rng)
            finally:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=WAIT)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            print(f"websockets client -> chinwag echo {runtime} {' '.join(flags) or '(default)'}: {expect} ok")


async def chinwag_client_against_websockets(binary: str) -> None:
    lines = [json.dumps({"n": n, "text": "the quick brown fox " * (n % 50 + 1)}) for n in range(200)]
    lines.append("y" * 300_000)
    servers = [
        ("websockets default (context takeover, 12-bit windows)", None, False),
        ("no context takeover, 9/10-bit windows",
         ServerPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True,
                                        server_max_window_bits=9, client_max_window_bits=10), True),
    ]
    for name, factory, server_resets in servers:
        for flags in [[], ["--deflate-takeover"]]:
            seen = []

            async def handler(ws):
                pmd = deflate_of(ws)
                seen.append((pmd, ws.request.headers.get("Sec-WebSocket-Extensions")))
                async for message in ws:
                    await ws.send(message)

            extensions = [factory] if factory else None
            compression = None if factory else "deflate"
            async with serve(handler, "127.0.0.1", 0, extensions=extensions, compression=compression,
                             max_size=None) as server:
                port = server.sockets[0].getsockname()[1]
                proc = await asyncio.create_subprocess_exec(
                    binary, "client", f"ws://127.0.0.1:{port}/", *flags,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    limit=1 << 20,
                )
                try:
                    for line in lines:
                        proc.stdin.write(line.encode() + b"\n")
                    await proc.stdin.drain()
                    for line in lines:
                        echoed = await asyncio.wait_for(proc.stdout.readline(), WAIT)
                        assert echoed.decode().rstrip("\n") == line, f"{name}: echo differs"
                    proc.stdin.close()
                    await asyncio.wait_for(proc.wait(), WAIT)
                    stderr = (await proc.stderr.read()).decode()
                finally:
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
            assert seen, f"{name}: no connection"
            pmd, offer = seen[0]
            assert pmd is not None, f"{name}: not negotiated (offer {offer!r})"
            assert "permessage-deflate" in stderr, f"{name}: the client did not report compression: {stderr}"
            takeover = bool(flags)
            # The client asks for no context takeover both ways unless told otherwise.
            assert pmd.remote_no_context_takeover == (not takeover or server_resets), (name, flags, offer)
            assert pmd.local_no_context_takeover == (not takeover or server_resets), (name, flags, offer)
            print(f"chinwag client {' '.join(flags) or '(default)'} -> websockets server, {name}: ok ({offer})")


async def main(binary: str) -> int:
    await asyncio.wait_for(clients_against_chinwag_echo(binary), 300)
    await asyncio.wait_for(chinwag_client_against_websockets(binary), 300)
    print("permessage-deflate interop with Python websockets passed")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
