"""JMAP request processing and one module per data type (methods registered in ``registry``)."""
