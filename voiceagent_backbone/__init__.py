"""voiceagent-backbone: durable state and retrieval context for LiveKit voice agents.

- `voiceagent_backbone.agent_svc`: the state layer for your own LiveKit agent (public API);
- `voiceagent_backbone.state_svc`, `voiceagent_backbone.context_svc`: the gRPC services;
- `voiceagent_backbone.api`: the generated gRPC contracts (from proto/);
- `voiceagent_backbone.servicekit`: what the services share.
"""
