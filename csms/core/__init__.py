"""Pure logic of the csms: no sockets, no Redis, no asyncio I/O (data in, data out)."""
