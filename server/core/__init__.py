"""The core layer: the database and its transactions, the database clock, SQL
helpers, the error family every layer raises, the schema, and the audit writer.

Nothing here knows about workflows, identities or transports; every other layer
builds on it.
"""
