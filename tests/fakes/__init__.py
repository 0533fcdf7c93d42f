"""Reusable test doubles: a fake OpenAI-compatible server and an in-memory runner API host."""
