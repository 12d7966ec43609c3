"""Dify apps (chat, agent-chat, chatflow, completion, workflow) behind the OpenAI API."""
