"""gocacheprog: the GOCACHEPROG helper of gocachegate.

Modules: ``wire`` (the protocol's messages), ``loop`` (reads requests, writes answers), ``cache``
(L1 over the remote: what a get, put and close do), ``l1`` (local disk cache), ``remote`` (the
gate's HTTP API), ``tokens`` (bearer token sources), ``stats`` (counters), ``config``, ``cli``.
Only the standard library is imported before the handshake goes out.
"""

__version__ = "0.1.0"

#: The helper's first message (GOCACHEPROG protocol), kept here, free of imports, so that it goes
#: out before anything else is loaded: every go command waits for it.
HANDSHAKE = b'{"ID":0,"KnownCommands":["get","put","close"]}\n'
