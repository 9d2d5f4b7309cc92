"""The local stack: the embedded broker and database stand-ins plus all five services, on one machine."""
