"""Contacts: importing people and their consent, staff-added suppressions."""
