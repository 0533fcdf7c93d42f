"""Chat-platform adapters (SPEC §13): plain classes, no Ray, one module per platform.

Each adapter turns the platform's inbound payloads into :class:`protocol.events.EventEnvelope`
(stable event types, the platform's own name in ``source_event_type``, honest ``delivery``),
checks their authenticity, and sends results out (post, edit, files, interaction prompts).
:func:`platforms.registry.build_adapter` makes the adapter of one configured connection.
"""
