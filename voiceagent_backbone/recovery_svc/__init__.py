"""recovery_svc: brings an agent back to a call whose agent job died (self-hosted LiveKit
does not re-dispatch jobs; LiveKit Cloud does)."""
