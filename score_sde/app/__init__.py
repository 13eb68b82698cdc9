"""The application layer: the build layer (config -> objects), checkpoint loading, config
validation, documentation and run records, the command line, the mode orchestration and the
`Pipeline` API. Only modules here (and interop, which translates foreign configs) take a whole
config."""
