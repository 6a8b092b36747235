"""`localllm serve`: one loaded model behind three wire formats at once (OpenAI's, Anthropic's Messages, Ollama's),
on Starlette and uvicorn. engine.py runs one generation at a time with a bounded queue; each *_api.py module turns
its format's requests into messages and options and the engine's chunks back into its format; app.py puts the
routes, the key check and the limits together."""
