"""The application: settings, database, contacts, campaigns, deliveries, rendering,
transports, the staff CLI and the web pages. Builds on :mod:`suppression`."""
