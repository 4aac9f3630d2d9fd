"""context_svc: retrieval enrichment (memory, knowledge, facts) for every user turn."""
