"""Durable state behind one narrow interface: `Store` and its transactions."""
