"""Use cases shared by the CLI and the TUI: loading a model for this machine, one-shot answers, chat sessions,
model and hardware reports. Front ends call these; these call backends, the store and the hardware layer."""
