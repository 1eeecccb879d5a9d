"""Adapters for the documented seed systems whose shapes no canonical RPC can
render: thin surface services over the engine and identity services."""
