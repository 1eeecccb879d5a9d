"""The gRPC edge: one servicer module per proto service, and the interceptors
(wire checks, authentication, limits) every call passes."""
