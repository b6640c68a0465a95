"""The documented routes, one module per resource. Each route lists its error responses so
`openapi.yaml` documents every status it can answer."""
