"""Service scaffolding shared by every gRPC service of the project.

One way to start and stop a service: configuration, JSON logs, authentication, error
mapping, Prometheus metrics, OpenTelemetry tracing, health, reflection and graceful
shutdown. Services contribute a `ServiceDefinition`; `serve()` does the rest.
"""
