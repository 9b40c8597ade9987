"""Segment's own Python library, unchanged, pointed at a Sluice receiver.

Usage: segment_sdk.py <receiver url> <write key> <events>
Sends <events> calls of every type through the library's batching consumer (with gzip), then
flushes; the library raises nothing and reports no error callback.
"""
import sys

import segment.analytics as analytics

url, write_key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
errors = []
analytics.write_key = write_key
analytics.host = url
analytics.gzip = True
analytics.max_retries = 1
analytics.on_error = lambda error, batch: errors.append(error)

per_type = count // 6
for i in range(per_type):
    analytics.track(f"user-{i}", "Order Completed", {"revenue": i, "currency": "EUR"})
    analytics.page(f"user-{i}", "Docs", "Getting started", {"path": "/docs"})
    analytics.screen(f"user-{i}", "App", "Settings")
    analytics.identify(f"user-{i}", {"email": f"user-{i}@example.com", "plan": "pro"})
    analytics.group(f"user-{i}", f"group-{i % 3}", {"name": "Acme"})
    analytics.alias(f"anon-{i}", f"user-{i}")
analytics.flush()
analytics.shutdown()
assert not errors, errors
print(f"segment-analytics-python sent {per_type * 6} events")
