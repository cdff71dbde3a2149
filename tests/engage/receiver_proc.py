"""An instant webhook endpoint in its own process (``python -m tests.engage.receiver_proc
PORT_FILE LOG_FILE``): plain asyncio HTTP/1.1 with keep-alive, answers 200 at once and
appends each request's ``X-Nudge-Idempotency-Key`` to LOG_FILE (one line per request,
flushed before answering). Its own process: its own GIL, unaffected by the test's threads."""

from __future__ import annotations

import asyncio
import socket
import sys


async def main(port_file: str, log_file: str) -> None:
    log = open(log_file, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, key = 0, "-"
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    n = name.strip().lower()
                    if n == b"content-length":
                        length = int(value.strip())
                    elif n == b"x-nudge-idempotency-key":
                        key = value.strip().decode()
                if length:
                    await reader.readexactly(length)
                log.write(key + "\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(sock.getsockname()[1]))
    import os

    os.replace(port_file + ".tmp", port_file)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
