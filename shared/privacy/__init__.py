"""Privacy controls shared by every service: the policy store, a cached view of it, the media filter.

See :mod:`shared.contracts.privacy` for the contract and docs/operations.md#privacy-controls.
"""
