"""The machine's ceiling (run by export_messages.py): the least a client can do for the same requests.

``python _ceiling_once.py URL API_KEY REQUESTS CONCURRENCY ID...``: REQUESTS ``GET .../messages``
over CONCURRENCY keep-alive connections, raw asyncio streams, no parsing beyond Content-Length, no
listing, no writing. Its efficiency on the same sandbox is what this machine allows any client.
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import urlsplit


async def worker(host: str, port: int, head: bytes, targets: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    for target in targets:
        writer.write(b"GET " + target.encode() + b" HTTP/1.1\r\n" + head)
        response_head = await reader.readuntil(b"\r\n\r\n")
        length = int(response_head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    writer.close()


async def main() -> None:
    url, key, count, concurrency, *ids = sys.argv[1:]
    parts = urlsplit(url)
    head = f"Host: {parts.netloc}\r\nAuthorization: Bearer {key}\r\nX-Exclude-PII: true\r\n\r\n".encode()
    targets = [f"{parts.path}/conversations/{ids[i % len(ids)]}/messages" for i in range(int(count))]
    n = int(concurrency)
    await asyncio.gather(
        *(worker(parts.hostname or "127.0.0.1", parts.port or 80, head, targets[i::n]) for i in range(n))
    )


if __name__ == "__main__":
    asyncio.run(main())
