"""state_svc: the system of record for conversations, events, snapshots and users."""
