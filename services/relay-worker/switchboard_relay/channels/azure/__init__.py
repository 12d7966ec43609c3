"""Azure OpenAI (`{base_url}/openai/deployments/{deployment}/chat/completions?api-version=…`)."""
