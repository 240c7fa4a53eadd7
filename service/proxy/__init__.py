"""The OpenAI-compatible proxy: upstream client, metering and the /v1 routes."""
