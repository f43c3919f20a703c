"""Known incompatibilities, pinned by strict xfails: each reason names the module at fault.

When a fix lands, the pinned tests start passing, ``strict=True`` turns that
into a failure, and the marker (and the entry here) must be removed.
"""

BTREE_REWRITES_ANCESTORS = (
    "durus/btree.py (containers): inserting a key into a BTree marks every ancestor of the "
    "leaf as changed, so each commit rewrites the whole root-to-leaf path with unchanged "
    "bytes; Durus 4.3 rewrites only the nodes an insert really changes (extra records, "
    "and extra write conflicts between clients inserting into different leaves)"
)

STALE_BTREE_LEN = (
    "durus/btree.py (containers): len(BTree) comes from per-node counts cached in memory; "
    "when another client inserts into a leaf, Durus 4.3 rewrites only that leaf, so our "
    "client reloads the leaf but keeps the stale counts of its ancestors, and len() "
    "disagrees with the keys (e.g. 230 vs 259 after a 4.3 client's inserts)"
)

PEER_SQLITE_REUSES_OID = (
    "Durus 4.3 defect, not ours (FORMATS.md 9.2 item 1): its SqliteStorage, reopened by its "
    "server, hands out max(id) -- an oid in use -- as a new oid; our client then refuses the "
    "commit ('stored twice in one transaction') instead of overwriting an object"
)
