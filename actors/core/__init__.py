"""Plain (Ray-free) logic the actors delegate to; unit-tested without Ray."""
