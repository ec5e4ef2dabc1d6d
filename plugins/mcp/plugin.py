"""The MCP plugin's hooks (being written)."""
