"""HTTP transport: one router module per resource. Handlers fetch a service object and map its result."""
