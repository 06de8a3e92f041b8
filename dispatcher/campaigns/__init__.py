"""Campaigns: create, schedule, fan out to deliveries, recover, report."""
