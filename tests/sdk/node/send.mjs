// Sends a plan of calls with Segment's real Node SDK (@segment/analytics-node), then flushes.
// Used by tests/e2e/test_segment_sdk.py: the plan comes as JSON on stdin,
//   {"writeKey": "...", "host": "http://127.0.0.1:PORT", "calls": [["track", {...}], ...]}
// and the HTTP statuses the SDK saw and any delivery errors are printed as JSON on stdout.
import { Analytics } from '@segment/analytics-node'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const plan = JSON.parse(Buffer.concat(chunks).toString('utf8'))

const analytics = new Analytics({
  writeKey: plan.writeKey,
  host: plan.host,
  flushAt: plan.flushAt ?? 15,
  flushInterval: 200,
  maxRetries: 3,
})
const statuses = []
const errors = []
analytics.on('http_response', (r) => statuses.push(r.status))
analytics.on('error', (e) => errors.push(String(e.reason ?? e.code ?? e)))
for (const [method, args] of plan.calls) {
  if (args.timestamp) args.timestamp = new Date(args.timestamp)
  analytics[method](args)
}
await analytics.closeAndFlush({ timeout: 30000 })
process.stdout.write(JSON.stringify({ statuses, errors }))
