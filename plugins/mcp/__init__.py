"""polyrlm as an MCP server (``polyrlm mcp``): ``rlm_ask`` and ``backends``
over stdio, with the official MCP Python SDK. The host's model settings come
from its own command line; the paths a client names are confined to the
roots the user allowed (``--root``)."""

__all__ = ["HELP"]

#: ``polyrlm mcp``'s line in ``polyrlm --help``.
HELP = "serve rlm_ask and backends to MCP clients over stdio (Claude Code, Cursor, ...)"
