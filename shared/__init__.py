"""Shared ClassPulse code: message contracts, settings, transports, metrics, logging.

Everything that crosses a service boundary is defined here and only here.
"""
