"""Known incompatibilities, pinned by strict xfails: each reason names the module at fault.

When a fix lands, the pinned tests start passing, ``strict=True`` turns that
into a failure, and the marker (and the entry here) must be removed.
"""

PEER_SQLITE_REUSES_OID = (
    "Durus 4.3 defect, not ours (FORMATS.md 9.2 item 1): its SqliteStorage, reopened by its "
    "server, hands out max(id) -- an oid in use -- as a new oid; our client then refuses the "
    "commit ('stored twice in one transaction') instead of overwriting an object"
)
