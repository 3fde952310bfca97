// Segment's own HTTP client in @segment/analytics-node (FetchHTTPClient, what its publisher posts
// batches with) sending a body over TrackLayer's limit: it must read the 413 and its reason, not
// a reset. The SDK's publisher keeps its own batches under 500 KB, so the body is built here and
// handed to the client as the publisher would. Run by tests/sdk/run.sh.
const { FetchHTTPClient } = require('@segment/analytics-node')

const client = new FetchHTTPClient()
const auth = 'Basic ' + Buffer.from(`${process.env.WRITE_KEY}:`).toString('base64')

async function post(bytes) {
  const filler = 'x'.repeat(bytes)
  const body = JSON.stringify({ batch: [{ type: 'track', event: 'Big', properties: { filler } }] })
  const response = await client.makeRequest({
    url: `${process.env.TRACKLAYER_HOST}/v1/batch`,
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: auth },
    body,
    httpRequestTimeout: 60000,
  })
  return [response.status, await response.text()]
}

;(async () => {
  for (const size of [5_000_000, 50_000_000]) {
    for (let i = 0; i < 3; i++) {
      let status, text
      try {
        ;[status, text] = await post(size)
      } catch (e) {
        console.error(`analytics-node: ${size} bytes: no answer read: ${e.cause?.code || e.message}`)
        process.exit(1)
      }
      if (status !== 413 || !text.includes('payload_too_large')) {
        console.error(`analytics-node: ${size} bytes: got ${status} ${text}`)
        process.exit(1)
      }
    }
  }
  console.log('analytics-node: 413 read for 5 MB and 50 MB bodies')
})()
