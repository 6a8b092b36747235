"""`localllm serve`: the models behind three wire formats at once (OpenAI's, Anthropic's Messages, Ollama's), on
Starlette and uvicorn. scheduler.py loads each model by name, in a runner process of its own (runner.py, the child;
runner_engine.py, serve's side); engine.py, in the runner, runs a model's generations with a bounded queue; each
*_api.py module turns its format's requests into messages and options and the engine's chunks back into its format;
app.py puts the routes, the key check and the limits together."""
