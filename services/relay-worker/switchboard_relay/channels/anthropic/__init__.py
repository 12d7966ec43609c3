"""Anthropic's Messages API (`POST {base_url}/messages`)."""
