"""Persistence for state_svc: one ConversationStore interface, SQLite and MongoDB behind it."""
