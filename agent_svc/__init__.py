"""agent_svc: the LiveKit Agents worker whose agent keeps layered, durable state."""
