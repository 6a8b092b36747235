"""Tools a model can call: the calling loop every backend shares (calling.py), and MCP servers as a source of tools
(mcp_config.py reads the ``mcpServers`` file, mcp_servers.py runs the servers and calls their tools)."""
