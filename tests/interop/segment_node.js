// Segment's own Node library, unchanged, pointed at a Sluice receiver.
// Usage: node segment_node.js <receiver url> <write key> <events>
const { Analytics } = require('@segment/analytics-node');

const [url, writeKey, count] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const analytics = new Analytics({ writeKey, host: url, maxEventsInBatch: 20, flushInterval: 200, maxRetries: 1 });
const errors = [];
analytics.on('error', (error) => errors.push(error));

async function main() {
  const perType = Math.floor(count / 6);
  for (let i = 0; i < perType; i++) {
    analytics.track({ userId: `node-${i}`, event: 'Checkout Started', properties: { step: i } });
    analytics.page({ anonymousId: `anon-${i}`, name: 'Pricing', properties: { path: '/pricing' } });
    analytics.screen({ userId: `node-${i}`, name: 'Home' });
    analytics.identify({ userId: `node-${i}`, traits: { plan: 'team' } });
    analytics.group({ userId: `node-${i}`, groupId: `org-${i % 2}`, traits: { name: 'Acme' } });
    analytics.alias({ userId: `node-${i}`, previousId: `anon-${i}` });
  }
  await analytics.closeAndFlush({ timeout: 10000 });
  if (errors.length) {
    console.error('errors:', errors);
    process.exit(1);
  }
  console.log(`@segment/analytics-node sent ${perType * 6} events`);
}
main();
