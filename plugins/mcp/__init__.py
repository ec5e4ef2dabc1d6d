"""polyrlm as an MCP server (``polyrlm mcp``)."""
