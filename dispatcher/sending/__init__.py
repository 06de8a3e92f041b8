"""Sending: claim a batch through the gate, render, build the message, hand it to a transport."""
