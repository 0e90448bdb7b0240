"""chatcap: an OpenAI-compatible chat-completions capability served as REST, MCP and an Agent Skill."""

__version__ = "0.1.0"
