"""OpenAI-compatible upstreams (OpenAI, DeepSeek, Ollama, vLLM, …)."""
