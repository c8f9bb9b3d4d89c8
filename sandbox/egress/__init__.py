"""Egress, shared by every backend: proxy, rules, bridge, resolver, TLS inspection."""
