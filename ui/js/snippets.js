// Setup lines for a source and for a data plane, filled in with the addresses this tenant's
// nodes advertise and, right after it was generated, the key itself.

import * as api from './api.js';
import { h, replace, field } from './dom.js';

const PLACEHOLDER = {
  proxy: 'https://collect.example.com',
  receiver: 'https://receiver.example.com',
};

/** Every way to send events to a source: [{ id, label, code }]. */
export function sourceSnippets({ proxyUrl, receiverUrl, writeKey }) {
  const proxy = proxyUrl || PLACEHOLDER.proxy;
  const receiver = receiverUrl || PLACEHOLDER.receiver;
  const key = writeKey || '<write key>';
  const bare = (url) => url.replace(/^https?:\/\//, '');
  return [
    { id: 'sluice-js', label: 'Website (sluice.js)', code: `<script src="${proxy}/sluice.js" data-write-key="${key}" async></script>
<script>
  window.sluice = window.sluice || [];
  sluice.push(["page"]);
</script>
<!-- later: sluice.track("Order Completed", { revenue: 42.5 }) -->` },
    { id: 'curl', label: 'curl', code: `curl -u '${key}:' ${receiver}/v1/track \\
  -H 'Content-Type: application/json' \\
  -d '{"userId":"user-42","event":"Order Completed","properties":{"revenue":42.5}}'` },
    { id: 'segment-node', label: 'Node.js (Segment)', code: `// npm install @segment/analytics-node
import { Analytics } from '@segment/analytics-node';

const analytics = new Analytics({ writeKey: '${key}', host: '${receiver}' });
analytics.track({ userId: 'user-42', event: 'Order Completed', properties: { revenue: 42.5 } });` },
    { id: 'rudder-node', label: 'Node.js (RudderStack)', code: `// npm install @rudderstack/rudder-sdk-node
const Analytics = require('@rudderstack/rudder-sdk-node');

const client = new Analytics('${key}', { dataPlaneUrl: '${receiver}' });
client.track({ userId: 'user-42', event: 'Order Completed', properties: { revenue: 42.5 } });` },
    { id: 'segment-python', label: 'Python (Segment)', code: `# pip install segment-analytics-python
import segment.analytics as analytics

analytics.write_key = '${key}'
analytics.host = '${receiver}'
analytics.track('user-42', 'Order Completed', {'revenue': 42.5})` },
    { id: 'rudder-python', label: 'Python (RudderStack)', code: `# pip install rudder-sdk-python
import rudderstack.analytics as rudder_analytics

rudder_analytics.write_key = '${key}'
rudder_analytics.dataPlaneUrl = '${receiver}'
rudder_analytics.track('user-42', 'Order Completed', {'revenue': 42.5})` },
    { id: 'segment-go', label: 'Go (Segment)', code: `// go get github.com/segmentio/analytics-go/v3
client, err := analytics.NewWithConfig("${key}", analytics.Config{Endpoint: "${receiver}"})
if err != nil {
	log.Fatal(err)
}
defer client.Close()
client.Enqueue(analytics.Track{
	UserId:     "user-42",
	Event:      "Order Completed",
	Properties: analytics.NewProperties().Set("revenue", 42.5),
})` },
    { id: 'segment-ios', label: 'iOS (Segment Swift)', code: `// Swift Package: https://github.com/segmentio/analytics-swift
let configuration = Configuration(writeKey: "${key}")
    .apiHost("${bare(receiver)}/v1")
    .flushAt(20)
let analytics = Analytics(configuration: configuration)
analytics.track(name: "Order Completed", properties: ["revenue": 42.5])` },
    { id: 'segment-android', label: 'Android (Segment Kotlin)', code: `// implementation("com.segment.analytics.kotlin:android:<version>")
val analytics = Analytics("${key}", applicationContext) {
    apiHost = "${bare(receiver)}/v1"
    flushAt = 20
}
analytics.track("Order Completed", buildJsonObject { put("revenue", 42.5) })` },
  ];
}

/**
 * A picker over snippets with a copy button. `onCopy` runs after a copy (the onboarding
 * checklist ticks "copy a snippet" from it).
 */
export function snippetPicker(snippets, { onCopy, note } = {}) {
  const select = h('select', { id: 'snippet-kind' }, snippets.map((s) => h('option', { value: s.id }, s.label)));
  const code = h('pre', { class: 'snippet', id: 'snippet-code', tabindex: '0', 'aria-label': 'Setup snippet' });
  const copied = h('span', { role: 'status', class: 'muted' });
  const show = () => {
    replace(code, snippets.find((s) => s.id === select.value)?.code || '');
    copied.textContent = '';
  };
  select.addEventListener('change', show);
  show();
  const copy = h('button', {
    type: 'button', id: 'copy-snippet', onclick: async () => {
      try {
        await navigator.clipboard.writeText(code.textContent);
        copied.textContent = 'Copied.';
      } catch {
        getSelection()?.selectAllChildren(code);
        copied.textContent = 'Selected: copy it with Ctrl+C.';
      }
      onCopy?.();
    },
  }, 'Copy');
  return h('div', { class: 'snippets' },
    h('div', { class: 'toolbar' }, field('Send from', select), copy, copied),
    code,
    note && h('p', { class: 'hint' }, note));
}

/** Tells the control plane a snippet was copied (an onboarding step); failures are harmless. */
export function snippetCopied(tenantId) {
  api.put(`/api/v1/tenants/${encodeURIComponent(tenantId)}/milestones/snippet_copied`).catch(() => {});
}

/** Where data planes reach the control plane's gRPC port. */
export async function controlUrl() {
  let config = {};
  try { config = await fetch('/ui/config.json').then((r) => r.json()); } catch { /* fall back below */ }
  if (config.grpc_url) return config.grpc_url;
  const scheme = config.grpc_tls ? 'https' : 'http';
  return `${scheme}://${location.hostname}:${config.grpc_port || 8081}`;
}

/** What to paste to run a data plane with a service key: [{ id, label, code }]. */
export function dataPlaneSnippets({ controlUrl: control, serviceKey }) {
  const key = serviceKey || '<service key>';
  return [
    { id: 'binary', label: 'One process (sluice binary)', code: `SLUICE_CONTROL_URL=${control} \\
SLUICE_SERVICE_KEY=${key} \\
SLUICE_PUBLIC_URL=http://127.0.0.1:8090 \\
sluice data-plane` },
    { id: 'compose', label: 'Docker Compose (deploy/docker-compose.yml)', code: `# deploy/.env (from deploy/.env.example)
SLUICE_CONTROL_URL=${control}
SLUICE_SERVICE_KEY=${key}

# then, from a clone of Sluice:
docker compose -f deploy/docker-compose.yml --env-file deploy/.env up -d` },
    { id: 'docker', label: 'docker run (all roles in one container)', code: `docker run -d --name sluice-data-plane \\
  -e SLUICE_CONTROL_URL=${control} \\
  -e SLUICE_SERVICE_KEY=${key} \\
  -e SLUICE_HTTP_ADDR=0.0.0.0:8090 -e SLUICE_PROXY_ADDR=0.0.0.0:8088 \\
  -e SLUICE_PUBLIC_URL=http://$(hostname):8090 \\
  -p 8088:8088 -p 8090:8090 \\
  ghcr.io/sluice/sluice:latest data-plane` },
  ];
}
