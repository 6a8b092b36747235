"""What this machine has (CPU, memory, GPUs, the llama.cpp build) and how a model should run on it."""
