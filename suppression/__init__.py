"""The policy core: who may receive what.

Canonical addresses, the consent ledger, the suppression list, the gate (a SQL predicate that
the dispatcher composes into its claim statement), signed tokens and the unsubscribe /
re-subscribe rules. This package imports nothing from ``dispatcher`` or ``workers``.
"""
