"""The pure scheduling core: decide(snapshot, config, now) -> Plan, and its replaceable steps."""
