// Lists an account's TURN usage with twilio-node pointed at traverse, and
// prints what it read as one JSON object. Driven by e2e/usage_node_test.go:
//   TRAVERSE_ISSUER=http://127.0.0.1:PORT ACCOUNT_SID=AC… AUTH_TOKEN=… \
//   START_DATE=YYYY-MM-DD END_DATE=YYYY-MM-DD node usage.js
"use strict";
const twilio = require("twilio");

async function main() {
  const env = process.env;
  const client = twilio(env.ACCOUNT_SID, env.AUTH_TOKEN, { edge: "", region: "" });
  client.api.baseUrl = env.TRAVERSE_ISSUER;
  const day = (s) => new Date(s + "T00:00:00Z");
  const records = await client.usage.records.list({ category: "turnmegabytes" });
  const daily = await client.usage.records.daily.list({
    category: "turnmegabytes",
    startDate: day(env.START_DATE),
    endDate: day(env.END_DATE),
    pageSize: 1,
  });
  const pick = (r) => ({
    accountSid: r.accountSid, category: r.category, usage: r.usage, usageUnit: r.usageUnit,
    count: r.count, price: r.price, startDate: r.startDate, endDate: r.endDate,
  });
  console.log(JSON.stringify({ records: records.map(pick), daily: daily.map(pick) }));
}

main().catch((err) => {
  console.error(String(err && err.stack ? err.stack : err));
  process.exit(1);
});
