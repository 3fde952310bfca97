// @segment/analytics-node posting to TrackLayer's /v1/batch (run by tests/sdk/run.sh).
const { Analytics } = require('@segment/analytics-node')

const run = process.env.RUN
const failures = []
const analytics = new Analytics({
  writeKey: process.env.WRITE_KEY,
  host: process.env.TRACKLAYER_HOST,
  maxRetries: 0,
  flushInterval: 200,
})
analytics.on('error', (error) => failures.push(String(error && (error.reason || error.message || error))))
analytics.on('http_request', () => {})

const userId = `${run}-node-user`
analytics.identify({
  userId,
  traits: { email: 'node.user@example.com', phone: '+31 6 1234 5679', firstName: 'Node' },
  messageId: `${run}-node-identify`,
})
analytics.track({
  userId,
  event: 'Order Completed',
  properties: { order_id: `${run}-NODE-1`, revenue: 19.99, currency: 'USD' },
  messageId: `${run}-node-purchase`,
})
analytics.track({
  userId,
  event: 'Signed Up',
  properties: { plan: 'team' },
  messageId: `${run}-node-signup`,
})

analytics.closeAndFlush({ timeout: 10000 }).then(() => {
  if (failures.length > 0) {
    console.error('analytics-node reported:\n  ' + failures.join('\n  '))
    process.exit(1)
  }
  console.log('analytics-node: 3 calls posted')
})
