"""Segment's own Python library, unchanged, sending orders to a Sluice receiver.

Usage: segment_orders.py <receiver url> <write key> <events>
Sends <events> `Order Completed` calls with known message ids (`order-<n>`), a fixed
timestamp and a browser's context, through the library's batching consumer; flushes and
fails when the library reports an error.
"""
import datetime
import sys

import segment.analytics as analytics

url, write_key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
errors = []
analytics.write_key = write_key
analytics.host = url
analytics.max_retries = 1
analytics.on_error = lambda error, batch: errors.append(error)

at = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
for n in range(count):
    analytics.track(
        user_id=f"user-{n}",
        event="Order Completed",
        properties={
            "order_id": f"o-{n}",
            "revenue": 10 + n,
            "currency": "EUR",
            "products": [{"product_id": f"sku-{n}", "name": "Mug", "price": 10 + n, "quantity": 1}],
        },
        context={
            "ip": "203.0.113.7",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
            "page": {"url": f"https://shop.example/thanks/{n}", "referrer": "https://shop.example/cart"},
            "traits": {"email": f" Buyer{n}@Example.com "},
        },
        timestamp=at,
        message_id=f"order-{n}",
    )
analytics.flush()
analytics.shutdown()
assert not errors, errors
print(f"segment-analytics-python sent {count} orders")
