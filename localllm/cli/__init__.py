"""The plain-terminal front end: `localllm COMMAND ...`."""
