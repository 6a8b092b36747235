"""Core types shared by every layer: messages, options, chunks, model specs, load plans, errors.

Nothing here imports a backend library, textual or any other heavy package.
"""
