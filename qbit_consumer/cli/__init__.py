"""The command line: ``run``/``check``/``healthcheck`` (``main``), and the operator commands
that talk to RabbitMQ only (``ops``)."""
